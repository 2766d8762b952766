//! Property-based fuzzing of the parsers hostile input reaches (peers, local users, web pages),
//! in the normal `cargo test` run rather than a separate cargo-fuzz setup.
//!
//! Each target feeds random and structured inputs (proptest strategies) to one codec for a
//! bounded time: 4 s per target when `CI` is set (≥ 30 s over all targets), 0.5 s otherwise,
//! `P2PCC_FUZZ_SECS` to override. Seeds are fresh each run, so CI keeps exploring; a failure
//! prints the shrunk input, which then becomes a plain regression test beside the target.
//! Panics inside a target are failures (proptest catches them).

use std::{
    fmt::Debug,
    time::{Duration, Instant},
};

use proptest::{
    strategy::Strategy,
    test_runner::{Config, TestCaseError, TestError, TestRunner},
};

/// Cases per proptest run; runs repeat until the time budget is spent.
const BATCH: u32 = 64;

/// The time each target runs for.
pub fn budget() -> Duration {
    if let Some(secs) = std::env::var("P2PCC_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        return Duration::from_secs_f64(secs);
    }
    if std::env::var_os("CI").is_some() {
        Duration::from_secs(4)
    } else {
        Duration::from_millis(500)
    }
}

/// Runs `test` on inputs from `strategy` for [`budget`] (at least one batch); panics with the
/// shrunk input on the first failure.
pub fn for_a_while<S>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget();
    let start = Instant::now();
    let mut cases = 0u64;
    loop {
        // A runner counts its successes and stops at `cases`: a fresh one (fresh random seed)
        // per batch.
        let mut runner = TestRunner::new(Config {
            cases: BATCH,
            failure_persistence: None,
            ..Config::default()
        });
        match runner.run(&strategy, &test) {
            Ok(()) => cases += u64::from(BATCH),
            Err(TestError::Fail(why, input)) => {
                panic!("fuzz {target}: {why}\nminimal failing input: {input:?}")
            }
            Err(TestError::Abort(why)) => panic!("fuzz {target}: aborted: {why}"),
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    eprintln!(
        "fuzz {target}: {cases} cases in {:.1?}, no failure",
        start.elapsed()
    );
}
