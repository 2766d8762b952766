//! bbr-p2p's tunables as the HTTP API shows and takes them: by name, with units, validated
//! as a whole before anything is applied.

use cc_ebpf_common::bbr::BbrConfig;
use serde_json::{Map, Value};

type Get = fn(&BbrConfig) -> u32;
type Set = fn(&mut BbrConfig, u32);
/// `(name, unit, get, set)`.
type Tunable = (&'static str, &'static str, Get, Set);
/// A change as `(name, old, new)`.
pub type Change = (&'static str, u32, u32);

/// `(name, unit, get, set)` of every tunable.
const TUNABLES: &[Tunable] = &[
    (
        "high_gain",
        "1/256 (256 = 1.0)",
        |c| c.high_gain,
        |c, v| c.high_gain = v,
    ),
    (
        "startup_cwnd_gain",
        "1/256",
        |c| c.startup_cwnd_gain,
        |c, v| c.startup_cwnd_gain = v,
    ),
    (
        "drain_gain",
        "1/256",
        |c| c.drain_gain,
        |c, v| c.drain_gain = v,
    ),
    (
        "cwnd_gain",
        "1/256",
        |c| c.cwnd_gain,
        |c, v| c.cwnd_gain = v,
    ),
    (
        "probe_up_gain",
        "1/256",
        |c| c.probe_up_gain,
        |c, v| c.probe_up_gain = v,
    ),
    (
        "probe_down_gain",
        "1/256",
        |c| c.probe_down_gain,
        |c, v| c.probe_down_gain = v,
    ),
    (
        "min_rtt_window_us",
        "µs",
        |c| c.min_rtt_window_us,
        |c, v| c.min_rtt_window_us = v,
    ),
    (
        "probe_rtt_interval_us",
        "µs",
        |c| c.probe_rtt_interval_us,
        |c, v| c.probe_rtt_interval_us = v,
    ),
    (
        "probe_rtt_duration_us",
        "µs",
        |c| c.probe_rtt_duration_us,
        |c, v| c.probe_rtt_duration_us = v,
    ),
    (
        "probe_rtt_cwnd_gain",
        "1/256",
        |c| c.probe_rtt_cwnd_gain,
        |c, v| c.probe_rtt_cwnd_gain = v,
    ),
    (
        "min_cwnd",
        "segments",
        |c| c.min_cwnd,
        |c, v| c.min_cwnd = v,
    ),
    (
        "full_bw_thresh",
        "1/256",
        |c| c.full_bw_thresh,
        |c, v| c.full_bw_thresh = v,
    ),
    (
        "full_bw_rounds",
        "rounds",
        |c| c.full_bw_rounds,
        |c, v| c.full_bw_rounds = v,
    ),
    (
        "full_loss_cnt",
        "ACKs",
        |c| c.full_loss_cnt,
        |c, v| c.full_loss_cnt = v,
    ),
    (
        "extra_acked_gain",
        "1/256",
        |c| c.extra_acked_gain,
        |c, v| c.extra_acked_gain = v,
    ),
    (
        "loss_bound_enabled",
        "0 or 1",
        |c| c.loss_bound_enabled,
        |c, v| c.loss_bound_enabled = v,
    ),
    (
        "loss_thresh_per_mille",
        "1/1000",
        |c| c.loss_thresh_per_mille,
        |c, v| c.loss_thresh_per_mille = v,
    ),
    (
        "loss_beta",
        "1/256",
        |c| c.loss_beta,
        |c, v| c.loss_beta = v,
    ),
    (
        "inflight_headroom",
        "1/256",
        |c| c.inflight_headroom,
        |c, v| c.inflight_headroom = v,
    ),
    (
        "probe_wait_base_us",
        "µs",
        |c| c.probe_wait_base_us,
        |c, v| c.probe_wait_base_us = v,
    ),
    (
        "probe_wait_rand_us",
        "µs",
        |c| c.probe_wait_rand_us,
        |c, v| c.probe_wait_rand_us = v,
    ),
    (
        "probe_max_rounds",
        "rounds",
        |c| c.probe_max_rounds,
        |c, v| c.probe_max_rounds = v,
    ),
    (
        "resume_enabled",
        "0 or 1",
        |c| c.resume_enabled,
        |c, v| c.resume_enabled = v,
    ),
];

/// `{"tunables": {name: value}, "units": {name: unit}, "defaults": {name: value}}`.
pub fn to_json(config: &BbrConfig) -> Value {
    let obj = |f: &dyn Fn(&Tunable) -> Value| {
        Value::Object(
            TUNABLES
                .iter()
                .map(|t| (t.0.to_owned(), f(t)))
                .collect::<Map<_, _>>(),
        )
    };
    serde_json::json!({
        "tunables": obj(&|t| Value::from(t.2(config))),
        "units": obj(&|t| Value::from(t.1)),
        "defaults": obj(&|t| Value::from(t.2(&BbrConfig::DEFAULT))),
    })
}

/// Applies a JSON object of changes to `config`; returns the new config and the changes as
/// `(name, old, new)`. Any unknown name, non-integer value or out-of-range result rejects the
/// whole request.
pub fn apply(config: &BbrConfig, changes: &Value) -> Result<(BbrConfig, Vec<Change>), String> {
    let Some(changes) = changes.as_object() else {
        return Err("expected a JSON object of tunable names and integer values".into());
    };
    if changes.is_empty() {
        return Err("no tunables given".into());
    }
    let mut new = *config;
    let mut applied = Vec::new();
    for (name, value) in changes {
        let Some(&(tname, unit, get, set)) = TUNABLES.iter().find(|t| t.0 == name) else {
            let valid: Vec<&str> = TUNABLES.iter().map(|t| t.0).collect();
            return Err(format!(
                "unknown tunable {name:?}; valid: {}",
                valid.join(", ")
            ));
        };
        let Some(v) = value.as_u64().and_then(|v| u32::try_from(v).ok()) else {
            return Err(format!(
                "{name} must be a non-negative integer ({unit}), got {value}"
            ));
        };
        applied.push((tname, get(&new), v));
        set(&mut new, v);
    }
    new.validate().map_err(str::to_owned)?;
    Ok((new, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_field_round_trips() {
        let c = BbrConfig::DEFAULT;
        let j = to_json(&c);
        assert_eq!(j["tunables"]["high_gain"], 710);
        assert_eq!(j["units"]["min_rtt_window_us"], "µs");
        let (same, _) = apply(&c, &j["tunables"]).unwrap();
        assert_eq!(same, c);
    }

    #[test]
    fn rejects_bad_input_whole() {
        let c = BbrConfig::DEFAULT;
        let e = apply(&c, &json!({"cwnd_gain": 512, "nope": 1})).unwrap_err();
        assert!(
            e.starts_with("unknown tunable \"nope\"; valid: high_gain, "),
            "{e}"
        );
        let e = apply(&c, &json!({"min_cwnd": "four"})).unwrap_err();
        assert_eq!(
            e,
            "min_cwnd must be a non-negative integer (segments), got \"four\""
        );
        let e = apply(&c, &json!({"cwnd_gain": 5000})).unwrap_err();
        assert_eq!(e, "cwnd_gain must be within 1.0..=4.0");
        let e = apply(&c, &json!({"min_cwnd": -1})).unwrap_err();
        assert!(
            e.starts_with("min_cwnd must be a non-negative integer"),
            "{e}"
        );
        let (new, changes) = apply(&c, &json!({"min_cwnd": 8})).unwrap();
        assert_eq!(new.min_cwnd, 8);
        assert_eq!(changes, vec![("min_cwnd", 4, 8)]);
    }
}

/// Fuzz target (see `crate::fuzz`): `PUT /api/cc/tunables` bodies (any JSON a local user with
/// the token, or a bug in a dashboard, sends).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::for_a_while;

    fn json_value() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            3 => proptest::sample::select(TUNABLES.iter().map(|t| t.0).collect::<Vec<_>>())
                .prop_map(str::to_owned),
            1 => ".{0,12}",
        ];
        let number = prop_oneof![
            any::<u32>().prop_map(Value::from),
            (0u64..3000).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Just(Value::from(u64::from(u32::MAX) + 1)),
        ];
        let leaf = prop_oneof![
            4 => number,
            1 => any::<bool>().prop_map(Value::from),
            1 => ".{0,8}".prop_map(Value::from),
            1 => Just(Value::Null),
        ];
        let object = proptest::collection::btree_map(name, leaf.clone(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()));
        prop_oneof![4 => object, 1 => leaf, 1 => proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::from)]
    }

    #[test]
    fn tunables_bodies() {
        for_a_while("tunables", json_value(), |changes| {
            let Ok((new, applied)) = apply(&BbrConfig::DEFAULT, &changes) else {
                return Ok(());
            };
            // Whatever is accepted is a valid configuration, changed only where asked.
            prop_assert!(new.validate().is_ok());
            let asked = changes.as_object().unwrap();
            prop_assert_eq!(applied.len(), asked.len());
            for (name, old, value) in &applied {
                prop_assert_eq!(Some(u64::from(*value)), asked[*name].as_u64());
                let get = TUNABLES.iter().find(|t| t.0 == *name).unwrap().2;
                prop_assert_eq!(get(&BbrConfig::DEFAULT), *old);
                prop_assert_eq!(get(&new), *value);
            }
            // The JSON the API shows reads back to the same configuration.
            let (same, _) = apply(&new, &to_json(&new)["tunables"]).unwrap();
            prop_assert_eq!(same, new);
            Ok(())
        });
    }
}
