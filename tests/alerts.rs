//! The standard alert stack, end to end: a real node exporter whose
//! textfile collector reports an md RAID array, a real Prometheus loaded
//! with node-mixin's RAID alerts as node_exporter's `docs/node-mixin`
//! renders them (`job="node"`, `device!=""`), a real Alertmanager posting
//! its webhook to `remedy run`. The machine is scraped by address; remedy
//! knows it by its node name through `[identity]`.

use std::time::Duration;

use serde_json::Value;

mod common;
use common::{wait_for, Alertmanager, NodeExporter, Prometheus, Remedy};

/// node-mixin's `NodeRAIDDegraded` and `NodeRAIDDiskFailure`, expressions as
/// the mixin renders them; `for` shortened from 15m so the test is quick.
const NODE_MIXIN_RAID: &str = r#"groups:
  - name: node-exporter
    rules:
      - alert: NodeRAIDDegraded
        expr: |
          node_md_disks_required{job="node",device!=""} - ignoring (state) (node_md_disks{state="active",job="node",device!=""}) > 0
        for: 1s
        labels:
          severity: critical
        annotations:
          summary: RAID Array is degraded
          description: "RAID array '{{ $labels.device }}' on {{ $labels.instance }} is in degraded state due to one or more disks failures. Number of spare drives is insufficient to fix issue automatically."
      - alert: NodeRAIDDiskFailure
        expr: |
          node_md_disks{state="failed",job="node",device!=""} > 0
        labels:
          severity: warning
        annotations:
          summary: Failed device in RAID array
          description: "At least one device in RAID array on {{ $labels.instance }} failed. Array '{{ $labels.device }}' needs attention and possibly a disk swap."
"#;

/// md1 as node_exporter's mdadm collector prints it: RAID1, `active` of 2
/// required, `failed` members.
fn md1(active: u32, failed: u32) -> String {
    format!(
        "# HELP node_md_disks Number of active/failed/spare disks of device.\n\
         # TYPE node_md_disks gauge\n\
         node_md_disks{{device=\"md1\",state=\"active\"}} {active}\n\
         node_md_disks{{device=\"md1\",state=\"failed\"}} {failed}\n\
         node_md_disks{{device=\"md1\",state=\"spare\"}} 0\n\
         # HELP node_md_disks_required Total number of disks of device.\n\
         # TYPE node_md_disks_required gauge\n\
         node_md_disks_required{{device=\"md1\"}} 2\n"
    )
}

#[test]
fn a_failed_raid_member_opens_a_disk_failure_on_the_node_name_and_resolves_when_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let publish = |text: &str| {
        let tmp = textfiles.join("md.prom.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, textfiles.join("md.prom")).unwrap();
    };
    publish(&md1(1, 1));
    // The mdadm collector is off: this machine has no arrays; the textfile has them.
    let exporter = NodeExporter::start(&[
        "--no-collector.mdadm".into(),
        format!("--collector.textfile.directory={}", textfiles.display()),
    ]);

    // remedy: the exporter's address is storage-7 (an alias file, as a CMDB export would be).
    std::fs::write(dir.path().join("nodes.csv"), "127.0.0.1,storage-7\n").unwrap();
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[identity]\nfile = \"nodes.csv\"\n",
    )
    .unwrap();
    let remedy = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let am_dir = dir.path().join("am");
    std::fs::create_dir(&am_dir).unwrap();
    let am = Alertmanager::start(&am_dir, remedy.port);
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let _prometheus = Prometheus::start(
        &prom_dir,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['rules.yml']\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{}']\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            am.port, exporter.port
        ),
        Some(NODE_MIXIN_RAID),
    );

    let open = || remedy.json("/v1/faults?state=open");
    wait_for(
        "a disk failure on storage-7",
        Duration::from_secs(60),
        || !open().as_array().unwrap().is_empty(),
    );
    let faults = open();
    let faults = faults.as_array().unwrap();
    assert_eq!(faults.len(), 1, "one machine, one fault: {faults:?}");
    assert_eq!(faults[0]["node"], "storage-7");
    assert_eq!(faults[0]["fault"], "disk_failure");
    assert_eq!(faults[0]["severity"], "critical");
    let reason = faults[0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("md1"), "{reason}");

    // The member is replaced and the array rebuilt: the alerts resolve, so does the fault.
    publish(&md1(2, 0));
    wait_for("the fault to resolve", Duration::from_secs(60), || {
        open().as_array().unwrap().is_empty()
    });
    let decisions = remedy.decisions();
    let on: Vec<(&str, &str)> = decisions
        .iter()
        .filter(|d| d["event"] != "action")
        .map(|d| (d["event"].as_str().unwrap(), d["node"].as_str().unwrap()))
        .collect();
    assert_eq!(
        on,
        [
            ("fault_opened", "storage-7"),
            ("fault_resolved", "storage-7")
        ],
        "{decisions:?}"
    );
    let resolved: Value = remedy.json("/v1/faults?state=resolved&node=storage-7");
    assert_eq!(resolved[0]["fault"], "disk_failure");
}

/// node-problem-detector's metrics with `preset = "node-problem-detector"`
/// (served here by a real node exporter's textfile collector, in NPD's
/// format): a KernelDeadlock and a ReadonlyFilesystem condition open their
/// faults; the deadlock clearing closes only its own fault, though both
/// arrive as `problem_gauge`.
#[test]
fn npd_conditions_open_their_faults_and_each_clears_on_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let publish = |deadlock: u8, readonly: u8| {
        let text = format!(
            "# HELP problem_counter Number of times a specific type of problem have occurred.\n\
             # TYPE problem_counter counter\n\
             problem_counter{{reason=\"DockerHung\"}} 1\n\
             # HELP problem_gauge Whether a specific type of problem is affecting the node or not.\n\
             # TYPE problem_gauge gauge\n\
             problem_gauge{{reason=\"DockerHung\",type=\"KernelDeadlock\"}} {deadlock}\n\
             problem_gauge{{reason=\"FilesystemIsReadOnly\",type=\"ReadonlyFilesystem\"}} {readonly}\n"
        );
        let tmp = textfiles.join("npd.prom.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, textfiles.join("npd.prom")).unwrap();
    };
    publish(1, 1);
    let exporter = NodeExporter::start(&[format!(
        "--collector.textfile.directory={}",
        textfiles.display()
    )]);
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "[[scrape]]\nurl = \"http://127.0.0.1:{}/metrics\"\nevery = \"300ms\"\nnode = \"worker-3\"\npreset = \"node-problem-detector\"\n",
            exporter.port
        ),
    )
    .unwrap();
    let remedy = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let open = || -> Vec<String> {
        let mut faults: Vec<String> = remedy
            .json("/v1/faults?state=open&node=worker-3")
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fault"].as_str().unwrap().to_string())
            .collect();
        faults.sort();
        faults
    };
    wait_for("both faults", Duration::from_secs(20), || open().len() == 2);
    assert_eq!(open(), ["disk_failure", "kernel_deadlock"]);
    publish(0, 1);
    wait_for("the deadlock to clear", Duration::from_secs(20), || {
        open() == ["disk_failure"]
    });
    // Scrapes go on: the read-only filesystem still holds its fault.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(open(), ["disk_failure"]);
}
