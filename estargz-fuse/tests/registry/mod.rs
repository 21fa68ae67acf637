//! A real OCI registry for the remote mount tests: Debian's `docker-registry` on a free
//! loopback port with its storage in a temporary directory. It can be killed and started again
//! on the same port and storage (a registry that dies mid-way and comes back). Killed, and its
//! storage deleted, when the guard drops.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use estargz_testkit::prereq;

/// A registry process and its storage; see the module documentation.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    port: u16,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Registry {
    /// Starts an anonymous registry, or returns `None` (after the testkit's prerequisite
    /// report: a failure under CI) when `docker-registry` is not installed.
    pub fn start() -> Option<Registry> {
        let bin = prereq::require_command("docker-registry", "docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("esgz-fuse-registry-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only-secret\n",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("write config");
        let mut reg = Registry {
            host: format!("127.0.0.1:{port}"),
            port,
            bin,
            config: cfg,
            log: dir.path().join("registry.log"),
            child: None,
            _dir: dir,
        };
        reg.run();
        Some(reg)
    }

    fn run(&mut self) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg(&self.config)
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        self.wait_port();
    }

    /// Kills the registry (like a crash); the storage stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the registry (SIGSTOP): connections are accepted by the kernel but nothing is
    /// answered, like a registry that stalls.
    pub fn stall(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Lets a stalled registry run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let child = self.child.as_ref().expect("the registry runs");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("signal the registry");
    }

    /// Starts the registry again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_port(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nothing listens on 127.0.0.1:{} after 15 s; log:\n{}",
            self.port,
            self.log()
        );
    }
}
