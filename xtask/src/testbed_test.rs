//! The front door's end-to-end test (issue 11, "Done when"), a stage of `cargo xtask test`:
//!
//! 1. `cargo xtask run` (this binary, `run --duration ...`) brings the 4-node testbed up; its
//!    own start-up check fails the run when a link's measured RTT is more than 10 % off.
//! 2. Headless Chromium (Debian's `chromium` + `chromium-driver`, WebDriver) opens the one URL,
//!    waits until at least 4 nodes show live data, types the run's token into the page and
//!    switches the cubic node to bbr-p2p with the page's own switch control.
//! 3. From the page's own per-second values (`window.p2pccNodes`): the median queueing delay of
//!    that node's busiest upload over the [`BEFORE`] seconds before the switch against
//!    [`AFTER_SKIP`]..[`AFTER`] seconds after it must fall by at least [`QUEUE_FALL`]×, with
//!    goodput at least [`GOODPUT_KEPT`]× (medians). A screenshot is kept in
//!    `target/testbed/overview.png`.
//! 4. A real Prometheus (`--prometheus`) has scraped the run: every query of the Grafana
//!    dashboard returns data (one link has 1 % loss, `--link n2=1%`, so the loss-bound panel has
//!    something to show; n2 is on neither the data nor the ACK path of the switched node's uploads).
//! 5. The run stops (SIGTERM), every node exits by itself within run.rs's grace (none killed),
//!    and nothing may be left: `p2pcc-*` namespaces and links, the
//!    workload's directory, processes in the namespaces, bbr_p2p in the available algorithms.
//! 6. Again after a SIGKILL of the run: the next start cleans up, then stops, and nothing is left.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::exec::{output, stop_child, workspace_root};

/// The overview address the test's run listens on (not the default, so a developer's own run
/// on 9400 does not answer).
const OVERVIEW: &str = "127.0.0.1:9411";
const DRIVER_PORT: u16 = 9515;
/// How long creating the browser session (and any WebDriver command) may take.
const SESSION_TIMEOUT_SECS: u64 = 180;
/// Seconds of page data before the switch that are compared.
const BEFORE: u64 = 30;
/// After the switch: the first seconds are the transition, not compared.
const AFTER_SKIP: u64 = 20;
const AFTER: u64 = 60;
const QUEUE_FALL: f64 = 5.0;
const GOODPUT_KEPT: f64 = 0.9;
/// The node the test switches (the default `--cc` puts cubic on n3).
const SWITCHED: &str = "n3";

pub fn run() -> anyhow::Result<String> {
    let artifacts = workspace_root().join("target/testbed");
    fs::create_dir_all(&artifacts)?;

    // The node's release build first: on a busy machine it can take longer than a run may take
    // to come up.
    crate::exec::release_node(true)?;
    // 1-5: a full run, switched from the page, scraped by Prometheus. Chromium first: it starts
    // slowly on a machine busy with the testbed.
    let driver = Driver::start()?;
    let mut testbed = start_run(300, &["--prometheus", "--link", "n2=1%"])?;
    // Every check runs and reports, so one run says everything that is missed.
    let mut outcomes = vec![check_page(&artifacts, &mut testbed, &driver)];
    outcomes.push(check_dashboard_queries());
    drop(driver);
    outcomes.push(testbed.stop().map(|()| String::new()));
    outcomes.push(
        leaves_nothing()
            .context("after the run stopped")
            .map(|()| String::new()),
    );

    // 6: SIGKILL, then the next start cleans up.
    let mut killed = start_run(60, &[])?;
    killed.kill();
    let mut next = start_run(30, &["--traffic", "none"])?;
    outcomes.push(next.stop().map(|()| String::new()));
    outcomes.push(
        leaves_nothing()
            .context("after a SIGKILLed run and the next start")
            .map(|()| "nothing left behind (after a stop, and after a SIGKILL)".to_owned()),
    );
    let (passed, failed): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    let passed: Vec<String> = passed
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let failed: Vec<String> = failed
        .into_iter()
        .filter_map(Result::err)
        .map(|err| format!("{err:#}"))
        .collect();
    ensure!(
        failed.is_empty(),
        "missed: {}; met: {}",
        failed.join("; "),
        passed.join("; ")
    );
    Ok(passed.join("; "))
}

/// A `cargo xtask run` in progress, its output echoed and scanned.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    token: Option<String>,
}

fn start_run(seconds: u64, extra: &[&str]) -> anyhow::Result<Run> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "run",
        "--duration",
        &seconds.to_string(),
        "--overview",
        OVERVIEW,
    ])
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // A killed test must not leave its run behind (SIGTERM: the run tears the testbed down).
    crate::exec::die_with_parent(&mut cmd);
    println!("[testbed] $ xtask run --duration {seconds} --overview {OVERVIEW}");
    let mut child = cmd.spawn().context("starting xtask run")?;
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                // The nodes' own lines are many; keep the run's.
                if !line.starts_with("[n") {
                    println!("[testbed]   {line}");
                }
                let _ = tx.send(line);
            }
        });
    }
    let mut run = Run {
        child,
        lines,
        token: None,
    };
    run.wait_ready()?;
    Ok(run)
}

impl Drop for Run {
    /// A run the test gave up on (an error on the way) must not outlive the test.
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(30));
    }
}

impl Run {
    /// Until the run prints its live page line (with the token).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(240);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(token) = line.split("switching needs the token ").nth(1) {
                        self.token = Some(token.trim_end_matches(')').trim().to_owned());
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("xtask run exited before the testbed was up: {status}");
            }
        }
        bail!("xtask run did not bring the testbed up within 240 s")
    }

    /// Stops the run; every node must then have exited by itself after its SIGTERM (run.rs
    /// kills, with a "did not stop" line, only a node that outlives its stop grace): a killed
    /// node skips its own cleanup.
    fn stop(&mut self) -> anyhow::Result<()> {
        stop_child(&mut self.child, Duration::from_secs(30));
        // The readers end when the run's pipes close (bounded: a leftover holding them open is
        // reported by `leaves_nothing`).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("did not stop within") => killed.push(line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        ensure!(killed.is_empty(), "nodes had to be killed: {killed:?}");
        Ok(())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Steps 2 and 3; returns the measured ratios.
fn check_page(artifacts: &Path, run: &mut Run, driver: &Driver) -> anyhow::Result<String> {
    (|| {
        driver.navigate(&format!("http://{OVERVIEW}/"))?;
        // ≥ 4 nodes with live data on every chart: each has samples and the page drew charts.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let live: Value = driver.script(
                "const n=[...window.p2pccNodes?.values()??[]];\
                 return {nodes:n.length, live:n.filter(x=>x.history.filter(h=>h.goodput!=null&&h.queue!=null).length>=5).length,\
                         charts:document.querySelectorAll('.chart canvas').length};",
            )?;
            if live["live"].as_u64() >= Some(4) && live["charts"].as_u64() >= Some(9) {
                println!("[testbed] page: {live}");
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the page showed no live data for 4 nodes within 90 s: {live}"
            );
            thread::sleep(Duration::from_secs(2));
        }
        // Let the loss-based algorithm fill its buffer before the baseline.
        thread::sleep(Duration::from_secs(BEFORE + 10));
        let token = run.token.clone().context("no token")?;
        let algorithm: Value = driver.script(&format!(
            "return window.p2pccNodes.get('{SWITCHED}').algorithm;"
        ))?;
        ensure!(
            algorithm == json!("cubic"),
            "{SWITCHED} runs {algorithm}, expected cubic"
        );
        // The page's own controls: the token field, the node's drop-down and its switch button.
        driver.type_into("#token", &token)?;
        let switched_at: Value = driver.script(&format!(
            "const s=document.querySelector('select[data-switch=\"{SWITCHED}\"]'); s.value='bbr-p2p';\
             document.querySelector('button[data-switch-button=\"{SWITCHED}\"]').click();\
             return Math.max(...window.p2pccNodes.get('{SWITCHED}').history.map(h=>h.t));"
        ))?;
        let switched_at = switched_at.as_u64().context("no sample time")?;
        thread::sleep(Duration::from_secs(3));
        let result: Value =
            driver.script("return document.getElementById('switchResult').textContent;")?;
        println!("[testbed] switch: {result}");
        thread::sleep(Duration::from_secs(AFTER));
        driver.screenshot(&artifacts.join("overview.png"))?;
        let history: Value = driver.script(&format!(
            "return window.p2pccNodes.get('{SWITCHED}').history;"
        ))?;
        // The per-second values the verdict is drawn from, kept beside the screenshot.
        let values = artifacts.join(format!("{SWITCHED}-history.json"));
        fs::write(
            &values,
            serde_json::to_string_pretty(&json!({"switched_at": switched_at, "history": history}))?,
        )?;
        println!("[testbed] per-second values: {}", values.display());
        compare(&history, switched_at)
    })()
}

/// The before/after medians of the switched node's queueing delay and goodput.
fn compare(history: &Value, switched_at: u64) -> anyhow::Result<String> {
    let points = history.as_array().context("history is not an array")?;
    let window = |from: u64, to: u64, key: &str| -> Vec<f64> {
        points
            .iter()
            .filter(|p| p["t"].as_u64().is_some_and(|t| t > from && t <= to))
            .filter_map(|p| p[key].as_f64())
            .collect()
    };
    let before_q = window(switched_at - BEFORE, switched_at, "queue");
    let after_q = window(switched_at + AFTER_SKIP, switched_at + AFTER, "queue");
    let before_g = window(switched_at - BEFORE, switched_at, "goodput");
    let after_g = window(switched_at + AFTER_SKIP, switched_at + AFTER, "goodput");
    ensure!(
        before_q.len() >= 10 && after_q.len() >= 10,
        "too few samples: {} before, {} after",
        before_q.len(),
        after_q.len()
    );
    let (bq, aq) = (median(before_q), median(after_q));
    let (bg, ag) = (median(before_g), median(after_g));
    let fall = bq / aq.max(0.1);
    let kept = ag / bg.max(f64::EPSILON);
    let verdict = format!(
        "{SWITCHED} cubic→bbr-p2p: median queueing delay {bq:.1} → {aq:.1} ms ({fall:.1}x, target ≥ {QUEUE_FALL}x), \
         goodput {bg:.1} → {ag:.1} Mbit/s ({kept:.2}x, target ≥ {GOODPUT_KEPT}x)"
    );
    println!("[testbed] {verdict}");
    ensure!(
        fall >= QUEUE_FALL && kept >= GOODPUT_KEPT,
        "missed: {verdict}"
    );
    Ok(verdict)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Every expression of the Grafana dashboard (panels and variables, with the variables set to
/// "all" and `$__rate_interval` to 1m) returns at least one series from the run's Prometheus.
fn check_dashboard_queries() -> anyhow::Result<String> {
    let path = workspace_root().join("dashboards/grafana/p2p-cc.json");
    let dashboard: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push((
                    panel["title"].as_str().unwrap_or("?").to_owned(),
                    expr.to_owned(),
                ));
            }
        }
    }
    // The switch annotation: the test switched n3, so it must find that switch.
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = annotation["name"].as_str().unwrap_or("?");
            exprs.push((
                format!("annotation {name}"),
                expr.replace("[$__rate_interval]", "[5m]"),
            ));
        }
    }
    let mut empty = Vec::new();
    for (title, expr) in &exprs {
        let query = expr
            .replace("$__rate_interval", "1m")
            .replace("=~\"$instance\"", "=~\".*\"")
            .replace("=~\"$peer\"", "=~\".*\"")
            .replace("=~\"$algorithm\"", "=~\".*\"");
        let path = format!("/api/v1/query?query={}", percent_encode(&query));
        let response = http_get(crate::prometheus::LISTEN, &path)?;
        let value: Value = serde_json::from_str(&response)
            .with_context(|| format!("Prometheus answered {response:?}"))?;
        let results = value["data"]["result"].as_array().map_or(0, Vec::len);
        if value["status"] != "success" || results == 0 {
            empty.push(format!("{title}: {query} ({})", value["error"]));
        }
    }
    let verdict = format!(
        "Prometheus: {} of {} dashboard queries returned data",
        exprs.len() - empty.len(),
        exprs.len()
    );
    println!("[testbed] {verdict}");
    ensure!(empty.is_empty(), "{verdict}; empty: {empty:#?}");
    Ok(verdict)
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain `GET`; the body. HTTP/1.0, so that the answer is not chunked (Prometheus chunks
/// larger answers to HTTP/1.1 requests) and the end of the connection ends the body.
fn http_get(address: &str, path: &str) -> anyhow::Result<String> {
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("malformed response")?;
    Ok(body.to_owned())
}

/// Nothing of a run may be left.
fn leaves_nothing() -> anyhow::Result<()> {
    let namespaces = output(Command::new("ip").args(["netns", "list"]))?;
    let links = output(Command::new("ip").args(["-o", "link", "show"]))?;
    let left: Vec<&str> = namespaces
        .lines()
        .chain(links.lines())
        .filter(|line| line.contains(crate::netns::PREFIX))
        .collect();
    ensure!(left.is_empty(), "left behind: {left:?}");
    ensure!(
        !Path::new(crate::workload::WORK_DIR).exists(),
        "{} is left behind",
        crate::workload::WORK_DIR
    );
    let available = fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")?;
    ensure!(
        !available.split_whitespace().any(|a| a == "bbr_p2p"),
        "bbr_p2p is still registered: {available}"
    );
    let nodes = output(Command::new("pgrep").args(["-x", "p2p-node"])).unwrap_or_default();
    ensure!(nodes.trim().is_empty(), "p2p-node processes left: {nodes}");
    // Unregistered is not gone: a socket still running bbr_p2p (an orphan retransmitting its
    // FIN into a deleted namespace) keeps the struct_ops map and its programs loaded. The
    // kernel frees the map after an RCU grace period, hence the short wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let maps = output(Command::new("bpftool").args(["struct_ops", "list"]))?;
        let left: Vec<&str> = maps.lines().filter(|l| l.contains("bbr_p2p")).collect();
        if left.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "bbr_p2p struct_ops maps still loaded 5 s after the stop: {left:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    println!("[testbed] nothing left behind");
    Ok(())
}

/// A chromedriver process and one headless Chromium session.
struct Driver {
    process: Child,
    session: String,
}

impl Driver {
    fn start() -> anyhow::Result<Self> {
        // Its own process group, so the browser it starts goes with it (see Drop); SIGTERM
        // when this process dies without a Drop (killed): a chromedriver left behind would keep
        // the kernel lock's descriptor that `flock` handed down.
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={DRIVER_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        crate::exec::die_with_parent(&mut cmd);
        let process = cmd
            .spawn()
            .context("starting chromedriver (Debian: chromium-driver)")?;
        let mut driver = Self {
            process,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(SESSION_TIMEOUT_SECS);
        let session = loop {
            let created = call(
                "POST",
                "/session",
                &json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2400"]
                }}}}),
            );
            match created {
                Ok(value) => break value,
                Err(err) if Instant::now() > deadline => {
                    return Err(err.context("creating a Chromium session"));
                }
                Err(_) => thread::sleep(Duration::from_millis(300)),
            }
        };
        driver.session = session["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_owned();
        Ok(driver)
    }

    fn navigate(&self, url: &str) -> anyhow::Result<()> {
        call(
            "POST",
            &format!("/session/{}/url", self.session),
            &json!({ "url": url }),
        )
        .map(drop)
    }

    fn script(&self, script: &str) -> anyhow::Result<Value> {
        call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            &json!({ "script": script, "args": [] }),
        )
    }

    fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = call(
            "POST",
            &format!("/session/{}/element", self.session),
            &json!({ "using": "css selector", "value": css }),
        )?;
        let id = element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .with_context(|| format!("no element {css}"))?;
        call(
            "POST",
            &format!("/session/{}/element/{id}/value", self.session),
            &json!({ "text": text }),
        )
        .map(drop)
    }

    fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = call(
            "GET",
            &format!("/session/{}/screenshot", self.session),
            &Value::Null,
        )?;
        let bytes = base64_decode(png.as_str().context("no screenshot data")?)?;
        fs::write(path, bytes)?;
        println!("[testbed] screenshot: {}", path.display());
        Ok(())
    }
}

impl Drop for Driver {
    /// Ends the session, then the driver's whole process group (chromedriver and the browser).
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call(
                "DELETE",
                &format!("/session/{}", self.session),
                &Value::Null,
            );
        }
        let pgid = libc::pid_t::try_from(self.process.id()).expect("pids fit in pid_t");
        // SAFETY: kill has no memory-safety preconditions; the group is the one our own
        // unreaped child leads, so its id cannot have been reused.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        stop_child(&mut self.process, Duration::from_secs(5));
        // SAFETY: as above; anything of the group still alive (the browser) goes now.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// One WebDriver command; its `value`.
fn call(method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let address = format!("127.0.0.1:{DRIVER_PORT}");
    let mut stream = TcpStream::connect(&address)?;
    // Starting the browser takes long on a loaded machine.
    stream.set_read_timeout(Some(Duration::from_secs(SESSION_TIMEOUT_SECS)))?;
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver may keep the connection open despite `Connection: close`: read the head,
    // then exactly Content-Length bytes.
    let (head, body) = read_response(&mut stream)?;
    let (head, body) = (head.as_str(), body.as_str());
    let value: Value =
        serde_json::from_str(body).with_context(|| format!("{method} {path}: {head}"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("{method} {path}: {}", value["value"]["message"]);
    }
    Ok(value["value"].clone())
}

/// The head and body of one HTTP response with a `Content-Length`.
fn read_response(stream: &mut TcpStream) -> anyhow::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk)?;
        ensure!(
            n > 0,
            "the connection closed before the response head ended"
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if name.trim().eq_ignore_ascii_case("content-length") {
                value.trim().parse().ok()
            } else {
                None
            }
        })
        .context("response without Content-Length")?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "the connection closed before the body ended");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok((head, String::from_utf8(body).context("non-UTF-8 body")?))
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let digit = |c: u8| -> anyhow::Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {c}"),
        }
        .into())
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            n |= digit(c)? << (18 - 6 * k);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WebDriver client against any page: `P2PCC_PAGE=http://… cargo test -p xtask --
    /// --ignored webdriver_client` (needs chromium and chromium-driver).
    #[test]
    #[ignore = "needs Chromium and a page to load"]
    fn webdriver_client() {
        let url = std::env::var("P2PCC_PAGE").expect("P2PCC_PAGE");
        let driver = Driver::start().unwrap();
        driver.navigate(&url).unwrap();
        thread::sleep(Duration::from_secs(3));
        let title = driver.script("return document.title;").unwrap();
        assert!(title.is_string(), "{title}");
        driver.type_into("#token", "abc").unwrap();
        let typed = driver
            .script("return document.getElementById('token').value;")
            .unwrap();
        assert_eq!(typed, json!("abc"));
        let path = std::env::temp_dir().join("p2pcc-webdriver-test.png");
        driver.screenshot(&path).unwrap();
        assert!(fs::read(&path).unwrap().starts_with(b"\x89PNG"));
    }

    #[test]
    fn percent_encodes_queries() {
        assert_eq!(
            percent_encode("rate(a{b=~\".*\"}[1m])"),
            "rate%28a%7Bb%3D~%22.%2A%22%7D%5B1m%5D%29"
        );
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert!(base64_decode("a!").is_err());
    }

    #[test]
    fn compares_medians_before_and_after() {
        let mut history = Vec::new();
        for t in 1..=200u64 {
            let (queue, goodput) = if t <= 100 {
                (150.0, 95.0)
            } else {
                (10.0, 94.0)
            };
            history.push(json!({"t": t, "queue": queue, "goodput": goodput}));
        }
        assert!(compare(&Value::Array(history.clone()), 100).is_ok());
        for p in &mut history[100..] {
            p["queue"] = json!(60.0);
        }
        assert!(compare(&Value::Array(history), 100).is_err());
    }
}
