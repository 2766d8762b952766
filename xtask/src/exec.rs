//! Running external commands: the one place that prints a command, runs it and names it when it
//! fails, so every error from xtask says which command to re-run by hand.

use std::{
    env,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Runs `cmd` with the terminal as its stdin/stdout/stderr, after printing it.
///
/// Fails when the command cannot be started or exits unsuccessfully; the error names the command.
pub fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    let line = describe(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout: for queries (`dpkg-query`, `ip netns list`, ...)
/// whose output xtask reads and whose echo would only be noise.
///
/// Fails like [`exec`], with the command's stderr in the error.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{line}` failed: {}: {}", out.status, stderr.trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// The command as a shell line: environment overrides first, then program and arguments.
pub fn describe(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            )),
            // `env -u` is how a shell user would remove it, so say it that way.
            None => words.push(format!("env -u {}", key.to_string_lossy())),
        }
    }
    words.push(shell_quote(&cmd.get_program().to_string_lossy()));
    words.extend(
        cmd.get_args()
            .map(|arg| shell_quote(&arg.to_string_lossy())),
    );
    if let Some(dir) = cmd.get_current_dir() {
        format!("(cd {} && {})", dir.display(), words.join(" "))
    } else {
        words.join(" ")
    }
}

/// `word` as a shell would need it to be typed: single-quoted when it holds anything beyond
/// plain characters (`--test '*'` must not be globbed when pasted into a shell).
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@%+^".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Removes from xtask's own environment what `cargo run` (the `cargo xtask` alias) set for it:
/// `CARGO_MANIFEST_DIR`, `CARGO_MANIFEST_PATH` and `CARGO_PKG_*` of the xtask package.
///
/// Every cargo xtask starts would inherit them, and ring's build script (through libp2p-noise)
/// declares `rerun-if-env-changed` on `CARGO_MANIFEST_DIR` and `CARGO_PKG_*`; cargo compares those
/// with its own environment, not with what it sets for the script. So a `cargo test` typed in a
/// shell and the same command run by `cargo xtask test` invalidated each other: ring, snow,
/// libp2p-noise, libp2p and every p2p-node target were rebuilt (4 min 12 s at load 10), and the
/// printed command did not reproduce what xtask ran.
///
/// # Safety
///
/// Must be called before any other thread exists (first thing in `main`): the environment is not
/// synchronised with concurrent readers.
pub unsafe fn forget_cargo_run_env() {
    let inherited: Vec<_> = env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_str().is_some_and(set_by_cargo_run))
        .collect();
    for name in inherited {
        // SAFETY: single-threaded, per this function's contract.
        unsafe { env::remove_var(name) };
    }
}

/// Whether cargo sets `name` for the package it builds or runs (the crate-specific variables of
/// cargo's "Environment variables Cargo sets for crates"), as opposed to cargo's own settings.
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

/// Whether xtask runs as root: installing packages, mounting and network namespaces need it.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace root (the directory above `xtask/`), where cargo commands run.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Builds `p2p-node` in release mode (unless `build` is false) and returns its path.
pub fn release_node(build: bool) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    if build {
        exec(Command::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "p2p-node",
        ]))?;
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release/p2p-node"))
}

/// Stops a child process: SIGTERM, up to `grace` to exit, then SIGKILL; always reaped.
pub fn stop_child(child: &mut std::process::Child, grace: std::time::Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
        // SAFETY: our own unreaped child: the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Makes the process `cmd` starts get SIGTERM when xtask dies, even if xtask is killed
/// outright (`PR_SET_PDEATHSIG`). The signal survives `ip netns exec`, which execs the command
/// without forking. It fires when the spawning thread ends, so spawn from the main thread.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Drains a child's output on its own thread, echoing only warning and error lines.
pub fn echo_problems(output: impl std::io::Read + Send + 'static, prefix: &'static str) {
    use std::io::BufRead as _;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("ERROR") || line.contains("WARN") || line.starts_with("error") {
                eprintln!("{prefix} {line}");
            }
        }
    });
}

/// `t` as "YYYY-MM-DD HH:MM UTC" (for benchmark records), formatted by date(1).
pub fn utc_minute(t: std::time::SystemTime) -> anyhow::Result<String> {
    let epoch = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    output(Command::new("date").args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d %H:%M UTC"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_only_the_package_variables_of_cargo_run() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_PRE",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_run(name), "{name}");
        }
        // cargo's own settings and the toolchain choice stay.
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RUSTUP_TOOLCHAIN",
            "PATH",
        ] {
            assert!(!set_by_cargo_run(name), "{name}");
        }
    }

    #[test]
    fn describes_commands_as_shell_lines() {
        let mut cmd = Command::new("cargo");
        cmd.env_remove("RUSTUP_TOOLCHAIN")
            .args(["test", "--test", "*", "--", "it's"]);
        assert_eq!(
            describe(&cmd),
            r"env -u RUSTUP_TOOLCHAIN cargo test --test '*' -- 'it'\''s'"
        );
    }
}
