//! `estargz mount` as a real daemon process: SIGUSR1 prints counters, SIGTERM unmounts and
//! prints them, and a daemon killed with SIGKILL can be replaced by a new mount at the same
//! path (with fusermount3's auto-unmount, and with a dead mount left behind).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use estargz_fuse::mount::{detach, is_mountpoint, is_stale};
use rustix::process::{kill_process, Pid, Signal};

fn ready() -> bool {
    estargz_testkit::prereq::require_root("mounting FUSE filesystems")
        && estargz_testkit::prereq::require_fuse()
}

fn blob() -> PathBuf {
    estargz_testkit::Vector::load("edge-gzip-default")
        .expect("vector")
        .blob_path()
        .expect("stored blob")
}

/// A running `estargz mount`; killed and its mount cleared on drop unless waited for.
struct Daemon {
    child: Option<Child>,
    at: PathBuf,
    /// The mount's cache directory. Without `--cache-dir` it would make a temporary one of its
    /// own, which a SIGKILL leaves behind in /tmp.
    _cache: tempfile::TempDir,
}

impl Daemon {
    fn start(at: &Path, extra: &[&str]) -> Daemon {
        let cache = tempfile::tempdir().expect("tempdir");
        let child = Command::new(env!("CARGO_BIN_EXE_estargz"))
            .arg("mount")
            .arg(blob())
            .arg(at)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn estargz mount");
        let d = Daemon {
            child: Some(child),
            at: at.canonicalize().expect("canonical mountpoint"),
            _cache: cache,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(is_mountpoint(&d.at) && !is_stale(&d.at) && d.at.join("dup/file.txt").exists()) {
            assert!(Instant::now() < deadline, "the mount never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn signal(&self, s: Signal) {
        let child = self.child.as_ref().expect("running");
        let pid = Pid::from_child(child);
        kill_process(pid, s).expect("kill");
    }

    /// Waits for exit; returns (success, stdout, stderr).
    fn wait(mut self) -> (bool, String, String) {
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("wait");
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.success(), out, err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only a daemon that was not waited for is cleaned up here: after `wait` the test
        // decides what happens to its (possibly dead) mount.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if is_mountpoint(&self.at) {
                let _ = detach(&self.at);
            }
        }
    }
}

fn read_ok(at: &Path) {
    let s = std::fs::read_to_string(at.join("dup/file.txt")).expect("read through the mount");
    assert_eq!(s.len(), 38);
}

#[test]
fn sigusr1_prints_counters_and_sigterm_unmounts() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), &["--no-auto-unmount"]);
    read_ok(dir.path());
    d.signal(Signal::USR1);
    std::thread::sleep(Duration::from_millis(400));
    d.signal(Signal::TERM);
    let at = d.at.clone();
    let (ok, out, err) = d.wait();
    assert!(ok, "exit status; stderr: {err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("fetched ")).collect();
    assert_eq!(lines.len(), 2, "one line for SIGUSR1, one at exit: {out}");
    assert!(lines[1].contains("served 38 bytes"), "{out}");
    assert!(!is_mountpoint(&at), "unmounted on SIGTERM");
}

#[test]
fn a_killed_daemon_can_be_replaced_at_the_same_path() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _cleanup = Cleanup(dir.path().canonicalize().expect("canonical"));

    // Without auto-unmount: SIGKILL leaves a dead mount, which the next mount clears.
    let d = Daemon::start(dir.path(), &["--no-auto-unmount"]);
    read_ok(dir.path());
    d.signal(Signal::KILL);
    let at = d.at.clone();
    let _ = d.wait();
    assert!(is_stale(&at), "SIGKILL leaves a dead mount (ENOTCONN)");
    let d = Daemon::start(dir.path(), &["--no-auto-unmount"]);
    read_ok(dir.path());
    d.signal(Signal::KILL);
    let _ = d.wait();

    // With auto-unmount (fusermount3): the dead mount goes away by itself.
    if estargz_fuse::mount::fusermount3_available() {
        let _ = detach(&at);
        let d = Daemon::start(dir.path(), &[]);
        read_ok(dir.path());
        d.signal(Signal::KILL);
        let _ = d.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mountpoint(&at) {
            assert!(
                Instant::now() < deadline,
                "fusermount3 did not unmount after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let d = Daemon::start(dir.path(), &[]);
        read_ok(dir.path());
        d.signal(Signal::INT);
        let (ok, _, err) = d.wait();
        assert!(ok, "{err}");
    } else {
        estargz_testkit::prereq::prerequisite_missing(
            "fusermount3 (Debian fuse3) for auto_unmount",
        );
    }
    assert!(!is_mountpoint(&at));
}

/// Clears whatever is still mounted at the path when the test ends, pass or fail.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if is_mountpoint(&self.0) {
            let _ = detach(&self.0);
        }
    }
}
