//! Node statuses as kubelets write them, for tests and benchmarks of what kwire does when
//! Nodes change.

use serde_json::{Value, json};

/// A status merge patch of a Node named `hostname` as its kubelet would send it at
/// heartbeat `beat`: the `InternalIP` stays `ip`, everything else (heartbeat time and
/// message, allocatable, images) moves with `beat`.
pub fn heartbeat(ip: &str, hostname: &str, beat: u64) -> Value {
    json!({"status": {
        "addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": hostname},
        ],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": format!("kubelet is posting ready status (beat {beat})"),
            "lastHeartbeatTime": format!("2026-12-04T10:{:02}:{:02}Z", beat / 60 % 60, beat % 60),
            "lastTransitionTime": "2026-12-04T09:00:00Z",
        }],
        "allocatable": {"cpu": "2", "memory": format!("{}Ki", 24_000_000 + beat)},
        "images": [{"names": [format!("registry.example/app:{beat}")], "sizeBytes": 1000 + beat}],
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_differ_but_the_addresses_do_not() {
        let (a, b) = (heartbeat("10.0.0.1", "n", 1), heartbeat("10.0.0.1", "n", 2));
        assert_ne!(a, b);
        assert_eq!(a["status"]["addresses"], b["status"]["addresses"]);
        assert_ne!(a["status"]["images"], b["status"]["images"]);
    }
}
