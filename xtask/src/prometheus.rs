//! `cargo xtask run --prometheus`: Debian's Prometheus server scraping the testbed, with
//! `dashboards/prometheus/prometheus.yml` as the configuration and this run's nodes as its
//! targets. Its data lives in [`DATA_DIR`] (removed at start and end); the server stops with the
//! run (the guard, and the parent-death signal after a SIGKILL of xtask).

use std::{
    fs,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::exec::{die_with_parent, stop_child, workspace_root};

/// Where the server listens.
pub const LISTEN: &str = "127.0.0.1:9090";
const DATA_DIR: &str = "/tmp/p2pcc-prometheus";

/// The running server; stopped on drop.
pub struct Prometheus {
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
        let _ = fs::remove_dir_all(DATA_DIR);
    }
}

/// The repository's configuration with its `targets:` line replaced by `targets`.
pub fn config(template: &str, targets: &[String]) -> String {
    let list = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    template
        .lines()
        .map(|line| match line.split_once("- targets:") {
            Some((indent, _)) => format!("{indent}- targets: [{list}]"),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub fn start(targets: &[String]) -> anyhow::Result<Prometheus> {
    let template_path = workspace_root().join("dashboards/prometheus/prometheus.yml");
    let template = fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    let _ = fs::remove_dir_all(DATA_DIR);
    fs::create_dir_all(DATA_DIR)?;
    let config_path = format!("{DATA_DIR}/prometheus.yml");
    fs::write(&config_path, config(&template, targets))?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={config_path}"))
        .arg(format!("--storage.tsdb.path={DATA_DIR}/data"))
        .arg(format!("--web.listen-address={LISTEN}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .context("starting prometheus (Debian package prometheus)")?;
    if let Some(stderr) = child.stderr.take() {
        crate::exec::echo_problems(stderr, "[prometheus]");
    }
    println!(
        "[run] Prometheus: http://{LISTEN}/ (scraping {} nodes)",
        targets.len()
    );
    Ok(Prometheus { child })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_targets_line_only() {
        let template = "scrape_configs:\n  - job_name: x\n    static_configs:\n      - targets: [\"a:1\"]\n        labels:\n";
        let out = config(
            template,
            &["10.77.1.2:9464".into(), "10.77.2.2:9464".into()],
        );
        assert!(out.contains("      - targets: [\"10.77.1.2:9464\", \"10.77.2.2:9464\"]\n"));
        assert!(out.contains("job_name: x"));
        assert!(!out.contains("a:1"));
    }
}
