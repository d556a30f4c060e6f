//! `watch` attached to a process whose PeerConnections are already open: those are
//! never judged clean, and their sockets still open after the grace are listed as
//! possibly leaked; PeerConnections opened after the attach are judged as usual.
//! Ground truth: the program's own account of the ports it leaked.
mod common;

use common::*;
use serde_json::Value;

impl LateWatch {
    fn verdict(&self, pc_id: u64) -> &Value {
        by_event(&self.ours, "verdict")
            .into_iter()
            .find(|v| v["pc_id"] == pc_id)
            .unwrap_or_else(|| panic!("no verdict for pc {pc_id}: {:#?}", self.ours))
    }

    /// Ports listed as possibly leaked by `pc_id`.
    fn possibly_leaked_ports(&self, pc_id: u64) -> Vec<u64> {
        let mut v: Vec<u64> = by_event(&self.ours, "possible_leak")
            .into_iter()
            .filter(|p| p["pc_id"] == pc_id)
            .filter_map(|p| p["local_port"].as_u64())
            .collect();
        v.sort();
        v
    }

    fn leaked_ports(&self, pc_id: u64) -> Vec<u64> {
        let mut v: Vec<u64> = by_event(&self.ours, "leak")
            .into_iter()
            .filter(|l| l["pc_id"] == pc_id)
            .filter_map(|l| l["local_port"].as_u64())
            .collect();
        v.sort();
        v
    }
}

#[test]
fn pcs_open_before_watch_attached_are_incomplete_and_list_their_leaks() {
    if !require_root("pcs_open_before_watch_attached_are_incomplete_and_list_their_leaks") {
        return;
    }
    let _serial = serial();
    // pc 1 opens (2 sockets, announced) before the attach and leaks one; pc 2 leaks,
    // pc 3 is clean, both after the attach.
    let run = watch_from_pause(
        &workload_bin("pc_sim"),
        &[
            "--pcs",
            "3",
            "--leak",
            "1",
            "--leak",
            "2",
            "--pause-after-open",
            "1",
            "--linger",
            "1500",
        ],
    );
    let said = |pc: u64| {
        run.program
            .iter()
            .find(|v| v["pc_id"] == pc)
            .unwrap_or_else(|| panic!("pc_sim said nothing of pc {pc}"))
    };
    let leaked_1 = said(1)["leaked_ports"].as_array().unwrap().clone();
    assert_eq!(leaked_1.len(), 1);

    let v1 = run.verdict(1);
    assert_eq!(v1["outcome"], "incomplete", "never clean: {v1}");
    assert_eq!(v1["reason"], "opened_before_attach");
    assert_eq!(
        run.possibly_leaked_ports(1),
        vec![leaked_1[0].as_u64().unwrap()],
        "the socket pc 1 leaked, and only it (its other one was released): {:#?}",
        run.ours
    );
    let p = by_event(&run.ours, "possible_leak")[0];
    assert_eq!(
        (p["age_ns"].is_null(), p["origin"].as_str()),
        (true, Some("preexisting"))
    );
    assert!(p["fd"].as_u64().is_some(), "its fd is known: {p}");

    assert_eq!(run.verdict(2)["outcome"], "leak");
    assert_eq!(
        run.leaked_ports(2),
        vec![said(2)["leaked_ports"][0].as_u64().unwrap()]
    );
    assert_eq!(run.verdict(3)["outcome"], "clean");
    assert_eq!(run.status, Some(1), "a leak was seen whole (pc 2)");
}
