//! Prerequisites from outside the process: root, FUSE, the Go oracle, commands on `PATH`.
//!
//! The rule for every test that needs one: **under CI (`CI=true`) a missing prerequisite fails
//! the test**, because CI installs everything and a silent skip would hide a broken setup;
//! **outside CI the test prints `skipping: <why>` to stderr and returns**, so `cargo test` works
//! on a laptop without root or Go.
//!
//! ```
//! use estargz_testkit::require_oracle;
//!
//! fn compares_with_the_oracle() {
//!     let Some(oracle) = require_oracle() else { return };
//!     // ... run `oracle` ...
//!     # let _ = oracle;
//! }
//! # compares_with_the_oracle();
//! ```

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running under CI: the `CI` environment variable is set to anything but `""`,
/// `0` or `false`.
pub fn in_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"),
        Err(_) => false,
    }
}

/// Reports a missing prerequisite: panics with `msg` under CI, otherwise prints
/// `skipping: <msg>` to stderr and returns so the caller can return early.
///
/// `#[track_caller]` makes the panic point at the test that needed the prerequisite.
#[track_caller]
pub fn prerequisite_missing(msg: impl Display) {
    if in_ci() {
        panic!("prerequisite missing under CI (CI=true, so this fails instead of skipping): {msg}");
    }
    eprintln!("skipping: {msg}");
}

/// Returns `found` if it is `Some`; otherwise reports `what` as missing (see
/// [`prerequisite_missing`]), with `how` telling how to get it, and returns `None`.
///
/// ```
/// use estargz_testkit::{prereq::which, require};
///
/// if let Some(zstd) = require(which("zstd"), "the zstd command", "apt-get install zstd") {
///     assert!(zstd.is_absolute());
/// }
/// ```
#[track_caller]
pub fn require<T>(found: Option<T>, what: &str, how: &str) -> Option<T> {
    if found.is_none() {
        prerequisite_missing(format_args!("{what} is not available ({how})"));
    }
    found
}

/// The Go reference implementation (`esgz-oracle`): `$ESGZ_ORACLE` when set, else
/// `<workspace>/target/tools/esgz-oracle` when that file exists. Built by `scripts/test.sh`
/// (or `sh tools/esgz-oracle/build.sh target/tools`).
pub fn oracle() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ESGZ_ORACLE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    Some(crate::workspace_dir().join("target/tools/esgz-oracle")).filter(|p| p.is_file())
}

/// [`oracle`], or a reported missing prerequisite (fails under CI, skips elsewhere).
#[track_caller]
pub fn require_oracle() -> Option<PathBuf> {
    require(
        oracle(),
        "the Go oracle esgz-oracle",
        "run scripts/test.sh, or `sh tools/esgz-oracle/build.sh target/tools` after installing \
         its Debian packages, or set ESGZ_ORACLE",
    )
}

/// True when the effective uid is 0. Reads `/proc/self/status`, falling back to `id -u`.
pub fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
        if let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
        {
            return euid == "0";
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}

/// True when running as root, or a reported missing prerequisite (`why` says what needs root).
#[track_caller]
pub fn require_root(why: &str) -> bool {
    require(is_root().then_some(()), "root", why).is_some()
}

/// True when `/dev/fuse` exists and this process can use it (root), or a reported missing
/// prerequisite.
#[track_caller]
pub fn require_fuse() -> bool {
    let ok = is_root() && Path::new("/dev/fuse").exists();
    require(
        ok.then_some(()),
        "FUSE (/dev/fuse as root)",
        "run the tests as root on a machine with /dev/fuse",
    )
    .is_some()
}

/// The absolute path of `command` found on `PATH`, like `which`.
pub fn which(command: &str) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
}

/// [`which`], or a reported missing prerequisite naming the Debian package that has it.
#[track_caller]
pub fn require_command(command: &str, debian_package: &str) -> Option<PathBuf> {
    require(
        which(command),
        &format!("the `{command}` command"),
        &format!("apt-get install {debian_package}; scripts/test.sh installs it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_root_agrees_with_id() {
        let Some(out) = Command::new("id").arg("-u").output().ok() else {
            return;
        };
        assert_eq!(is_root(), out.stdout.trim_ascii() == b"0");
    }

    #[test]
    fn which_finds_sh() {
        let sh = which("sh").expect("sh on PATH");
        assert!(sh.is_absolute());
        assert_eq!(which("definitely-not-a-command-xyz"), None);
    }

    #[test]
    fn require_passes_values_through() {
        assert_eq!(require(Some(3), "three", "n/a"), Some(3));
    }

    #[test]
    fn missing_prerequisite_follows_the_ci_rule() {
        let result = std::panic::catch_unwind(|| prerequisite_missing("nothing, this is a test"));
        assert_eq!(result.is_err(), in_ci());
    }

    #[test]
    fn oracle_when_present_runs() {
        let Some(oracle) = require_oracle() else {
            return;
        };
        let out = Command::new(&oracle)
            .arg("version")
            .output()
            .expect("run oracle");
        assert!(
            out.status.success(),
            "{} version: {:?}",
            oracle.display(),
            out
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("v0.12.0"));
    }
}
