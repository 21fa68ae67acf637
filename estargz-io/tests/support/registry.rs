//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port with a temporary storage directory, optionally behind htpasswd basic auth or
//! a token server (`token_server.py`, copied from the project's environment notes). Killed
//! when the guard drops.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use estargz_testkit::prereq;

/// How the registry authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anonymous pull and push.
    None,
    /// htpasswd basic auth (user `testuser`, password `testpass`).
    Htpasswd,
    /// Bearer tokens from a token server that wants `testuser:testpass`.
    Token,
}

pub const USER: &str = "testuser";
pub const PASS: &str = "testpass";

/// A running registry; stopped (and its storage deleted) on drop.
pub struct Registry {
    pub host: String,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn python_with_cryptography() -> Option<String> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py.to_owned());
        }
    }
    None
}

/// Starts a registry, or returns `None` (after the testkit's prerequisite report) when
/// `docker-registry` (or what the auth mode needs) is missing.
pub fn start(auth: Auth) -> Option<Registry> {
    let bin = prereq::require_command("docker-registry", "docker-registry")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut children = Vec::new();
    let auth_yaml = match auth {
        Auth::None => String::new(),
        Auth::Htpasswd => {
            let htpasswd = prereq::require_command("htpasswd", "apache2-utils")?;
            let out = Command::new(htpasswd)
                .args(["-Bbn", USER, PASS])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                file.display()
            )
        }
        Auth::Token => {
            let py = prereq::require(
                python_with_cryptography(),
                "python3 with the cryptography module",
                "apt-get install python3-cryptography",
            )?;
            let tport = free_port();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/token_server.py");
            let mut child = Command::new(py)
                .arg(script)
                .arg(dir.path())
                .arg(tport.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("token server");
            // It prints "ready" once cert.pem is written.
            let stdout = child.stdout.take().expect("stdout");
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            assert_eq!(line.trim(), "ready", "token server did not start");
            children.push(child);
            wait_port(tport);
            format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                dir.path().join("cert.pem").display()
            )
        }
    };
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only-secret\n{auth_yaml}",
        dir.path().join("data").display()
    );
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config).expect("write config");
    let log = dir.path().join("registry.log");
    let logf = std::fs::File::create(&log).expect("log");
    let child = Command::new(bin)
        .arg("serve")
        .arg(&cfg)
        .stdout(logf.try_clone().expect("log"))
        .stderr(logf)
        .spawn()
        .expect("spawn docker-registry");
    children.push(child);
    let reg = Registry {
        host: format!("127.0.0.1:{port}"),
        children,
        _dir: dir,
        log,
    };
    wait_port(port);
    Some(reg)
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port} after 15 s");
}
