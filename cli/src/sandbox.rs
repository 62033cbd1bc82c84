//! `kwire sandbox up` and `kwire sandbox down`: kwire end to end on this machine (see the
//! `kwire-sandbox` crate), and the removal of what a crashed sandbox left behind.
//!
//! The reports are pure functions of the plan and what was done ([`render_down`],
//! [`render_dry_run`]); [`up`] and [`down`] run things and print.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use kwire_sandbox::netns::can_run_network_tests;
use kwire_sandbox::record::{Record, read_records, record_dir};
use kwire_sandbox::sandbox::{Sandbox, interrupt, interrupted};
use kwire_sandbox::teardown::{self, Options, Outcome, Plan};

/// The exit code after Ctrl-C, as shells report a process ended by SIGINT.
const INTERRUPTED_EXIT: u8 = 130;

/// `kwire sandbox up`.
pub struct UpArgs {
    pub files: Vec<PathBuf>,
    pub namespace: String,
    pub check: bool,
    pub timeout: Duration,
    /// Whether kube-controller-manager runs (see `--without-controller-manager`).
    pub controller_manager: bool,
    /// Every node a kubelet node (`--nodes kubelet`).
    pub kubelet_nodes: bool,
}

/// Brings the topology up, verifies it, then stays up until Ctrl-C, also when a check failed
/// (or tears down at once with `--check`). Exit code 1 when something is not Ready or a ping
/// fails (without `--check`, once Ctrl-C has torn the sandbox down).
pub fn up(args: UpArgs) -> Result<ExitCode> {
    if let Err(why) = can_run_network_tests() {
        bail!("the sandbox cannot run here: {why}");
    }
    // Two workers: the sandbox's waits block the thread they run on, and the signal handler
    // must still run meanwhile.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(up_async(args))
}

async fn up_async(args: UpArgs) -> Result<ExitCode> {
    let stop = Arc::new(tokio::sync::Notify::new());
    watch_signals(stop.clone())?;
    eprintln!(
        "kwire sandbox: {}",
        args.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(note) = stale_note() {
        eprintln!("{note}");
    }
    let up = if args.kubelet_nodes {
        Sandbox::up_kubelet(&args.files, &args.namespace, false).await
    } else if args.controller_manager {
        Sandbox::up(&args.files, &args.namespace, false).await
    } else {
        Sandbox::up_without_controller_manager(&args.files, &args.namespace, false).await
    };
    let mut sandbox = match up {
        Ok(sandbox) => sandbox,
        Err(_) if interrupted() => return Ok(interrupted_exit()),
        Err(e) => return Err(e.into()),
    };
    let failure = match verify(&mut sandbox, args.timeout) {
        Checked::Interrupted => {
            drop(sandbox);
            return Ok(interrupted_exit());
        }
        Checked::Passed => None,
        Checked::Failed(why) => Some(why),
    };
    let stays_up = staying_up(
        args.check,
        failure.as_deref(),
        &sandbox.id(),
        sandbox.cp.admin_kubeconfig(),
        sandbox.record_path(),
    );
    if let Some(message) = &stays_up {
        eprintln!("{message}");
        supervise_until_stopped(&mut sandbox, &stop).await;
    }
    eprintln!("tearing down");
    drop(sandbox);
    match failure {
        // Exit code 1, after Ctrl-C too: the sandbox did not pass its checks. The whole
        // message was printed when it stayed up; its first line is enough now.
        Some(why) if stays_up.is_some() => bail!("{}", why.lines().next().unwrap_or_default()),
        Some(why) => bail!("{why}"),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Until Ctrl-C (or SIGTERM): reports every node daemon found dead and restarts it, as the
/// DaemonSet's kubelet would (see `Sandbox::supervise_daemons`).
async fn supervise_until_stopped(sandbox: &mut Sandbox, stop: &tokio::sync::Notify) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            // A stored permit: a signal between two looks is not lost.
            _ = stop.notified() => return,
            _ = tick.tick() => {
                for event in sandbox.supervise_daemons() {
                    eprintln!("{event}");
                }
            }
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    Passed,
    /// What failed, in one line.
    Failed(String),
    /// Ctrl-C during the checks.
    Interrupted,
}

/// Waits for every object to be Ready (for at most `timeout`), then runs the pings; prints
/// the status table and each ping's result.
fn verify(sandbox: &mut Sandbox, timeout: Duration) -> Checked {
    sandbox
        .steps
        .start("every Interface, Peer and Route Ready and Connected");
    if let Err(e) = sandbox.wait_ready(timeout) {
        if interrupted() {
            return Checked::Interrupted;
        }
        eprintln!();
        eprintln!("{}", sandbox.status_table());
        return Checked::Failed(e.to_string());
    }
    sandbox.steps.done();
    sandbox.steps.start("pings through every link and route");
    let pings = match sandbox.expected_pings() {
        Ok(pings) => pings,
        Err(e) => {
            eprintln!();
            return Checked::Failed(format!("listing the pings to run: {e}"));
        }
    };
    let results = sandbox.ping_all(&pings);
    if interrupted() {
        return Checked::Interrupted;
    }
    sandbox.steps.done();

    println!("\n{}", sandbox.status_table());
    for (ping, ok) in &results {
        println!("{}: {}", ping.label, if *ok { "ok" } else { "FAILED" });
    }
    println!(
        "\nup and verified in {:.1}s",
        sandbox.steps.total().as_secs_f64()
    );
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    if failed > 0 {
        eprintln!("{}", sandbox.logs_tail(20));
        return Checked::Failed(format!("{failed} of {} pings failed", results.len()));
    }
    Checked::Passed
}

/// Whether `up` stays up after its checks, and what it says then: without `--check` it
/// stays up until Ctrl-C, also (and then above all) when a check failed, so that the
/// sandbox can be looked at; with `--check` it tears down at once.
pub fn staying_up(
    check: bool,
    failure: Option<&str>,
    id: &str,
    kubeconfig: &Path,
    record: &Path,
) -> Option<String> {
    if check {
        return None;
    }
    let up = format!(
        "sandbox {id} is up (kubeconfig: {}; record: {})",
        kubeconfig.display(),
        record.display()
    );
    Some(match failure {
        None => format!("{up}; Ctrl-C tears it down"),
        Some(why) => format!(
            "error: {why}\n{up} for inspection, although a check failed; Ctrl-C tears it down and exits with code 1"
        ),
    })
}

/// From now on Ctrl-C, SIGTERM and SIGHUP ask the sandbox to stop and tear down, instead of
/// killing this process (which would leave everything for `kwire sandbox down`).
fn watch_signals(stop: Arc<tokio::sync::Notify>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
        interrupt();
        // A stored permit: the wait for it may begin after the signal.
        stop.notify_one();
    });
    Ok(())
}

/// A reminder when sandboxes that were killed left things behind (they may hold ports and
/// slow this machine down; removing them is `kwire sandbox down`'s job, not `up`'s).
fn stale_note() -> Option<String> {
    let records = read_records(&record_dir()).ok()?;
    let stale = records
        .iter()
        .filter_map(|f| f.record.as_ref().ok())
        .filter(|r| !(r.boot_id == kwire_sandbox::record::boot_id() && r.owner.is_running()))
        .count();
    (stale > 0).then(|| {
        format!(
            "note: {stale} sandbox(es) ended without tearing down; `kwire sandbox down` removes what they left"
        )
    })
}

fn interrupted_exit() -> ExitCode {
    eprintln!("\ninterrupted: torn down");
    ExitCode::from(INTERRUPTED_EXIT)
}

/// `kwire sandbox down`.
pub struct DownArgs {
    pub ids: Vec<String>,
    pub force: bool,
    pub dry_run: bool,
}

/// Removes what the records of ended sandboxes (or the chosen ones) list. Exit code 1 when
/// something could not be removed.
pub fn down(args: DownArgs) -> Result<ExitCode> {
    let dir = record_dir();
    let mut records = Vec::new();
    for file in read_records(&dir)? {
        match file.record {
            Ok(record) => records.push((file.path, record)),
            Err(why) => eprintln!(
                "warning: {} is not a sandbox record kwire can read ({why}); left alone",
                file.path.display()
            ),
        }
    }
    let observed = teardown::observe(records.iter().map(|(_, r)| r));
    let plan = teardown::plan(
        &records,
        &observed,
        &Options {
            ids: args.ids,
            force: args.force,
        },
    );
    if args.dry_run {
        print!("{}", render_dry_run(&plan, &dir));
        return Ok(ExitCode::SUCCESS);
    }
    let outcomes = teardown::apply(&plan);
    // A port still listened on after its processes are gone was taken by someone else
    // meanwhile, or a process was missed: either way, say so.
    let removed: Vec<&Record> = records
        .iter()
        .filter(|(_, r)| plan.sandboxes.iter().any(|s| s.id == r.id))
        .map(|(_, r)| r)
        .collect();
    let listening = teardown::listening_tcp_ports();
    let busy: BTreeSet<u16> = removed
        .iter()
        .flat_map(|r| r.ports.iter().copied())
        .filter(|p| listening.contains_key(p))
        .collect();
    print!("{}", render_down(&plan, &outcomes, &busy, &dir));
    Ok(if outcomes.iter().any(|o| !o.failed.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The report of `kwire sandbox down`.
pub fn render_down(plan: &Plan, outcomes: &[Outcome], busy: &BTreeSet<u16>, dir: &Path) -> String {
    let mut out = String::new();
    for (sandbox, outcome) in plan.sandboxes.iter().zip(outcomes) {
        let _ = writeln!(out, "sandbox {} ({}):", sandbox.id, owner(sandbox));
        for line in &outcome.done {
            let _ = writeln!(out, "  {line}");
        }
        for line in &outcome.failed {
            let _ = writeln!(out, "  FAILED: {line}");
        }
        for line in &sandbox.left {
            let _ = writeln!(out, "  left alone: {line}");
        }
    }
    for port in busy {
        let _ = writeln!(
            out,
            "note: port {port}, which a removed sandbox listened on, is in use again"
        );
    }
    out.push_str(&render_rest(plan, dir));
    out
}

/// `kwire sandbox down --dry-run`: what would be done.
pub fn render_dry_run(plan: &Plan, dir: &Path) -> String {
    let mut out = String::new();
    for sandbox in &plan.sandboxes {
        let _ = writeln!(out, "sandbox {} ({}), would:", sandbox.id, owner(sandbox));
        for action in &sandbox.actions {
            let _ = writeln!(out, "  {}", action.describe());
        }
        for line in &sandbox.left {
            let _ = writeln!(out, "  leave alone: {line}");
        }
    }
    out.push_str(&render_rest(plan, dir));
    out
}

fn owner(sandbox: &teardown::SandboxPlan) -> String {
    let state = if sandbox.owner_running {
        "still running: --force"
    } else {
        "ended"
    };
    format!(
        "{}; process {} {state}",
        sandbox.owner_command, sandbox.owner.pid
    )
}

/// Skipped records, unknown ids, and "nothing to do".
fn render_rest(plan: &Plan, dir: &Path) -> String {
    let mut out = String::new();
    for skipped in &plan.skipped {
        let _ = writeln!(out, "sandbox {} left alone: {}", skipped.id, skipped.reason);
    }
    for id in &plan.not_found {
        let _ = writeln!(
            out,
            "no record {id} in {} (already removed?)",
            dir.display()
        );
    }
    if plan.is_empty() {
        let why = if plan.skipped.is_empty() && plan.not_found.is_empty() {
            format!("no record of an ended sandbox in {}", dir.display())
        } else if plan.not_found.is_empty() {
            "every recorded sandbox is running".to_string()
        } else {
            "no such record".to_string()
        };
        let _ = writeln!(out, "nothing to do: {why}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_sandbox::record::ProcessId;
    use kwire_sandbox::teardown::{Action, SandboxPlan, Skipped};

    fn plan() -> Plan {
        Plan {
            sandboxes: vec![SandboxPlan {
                id: "4242-0".into(),
                record: "/run/kwire-sandbox/4242-0.json".into(),
                owner: ProcessId {
                    pid: 4242,
                    start_time: 1,
                },
                owner_command: "kwire sandbox up -f relay.yaml".into(),
                owner_running: false,
                actions: vec![
                    Action::DeleteNetns {
                        name: "kwa4242x1".into(),
                        inode: Some(7),
                    },
                    Action::RemoveRecord {
                        path: "/run/kwire-sandbox/4242-0.json".into(),
                    },
                ],
                left: vec![],
            }],
            skipped: vec![Skipped {
                id: "5000-0".into(),
                record: "/run/kwire-sandbox/5000-0.json".into(),
                reason: "its process 5000 (kwire sandbox up -f a.yaml) is running; stop it (Ctrl-C), or use --force".into(),
            }],
            not_found: vec![],
        }
    }

    #[test]
    fn the_report_lists_what_was_removed_and_what_was_left() {
        let p = plan();
        let outcomes = vec![Outcome {
            id: "4242-0".into(),
            done: p.sandboxes[0].actions.iter().map(Action::done).collect(),
            failed: vec![],
        }];
        let text = render_down(
            &p,
            &outcomes,
            &BTreeSet::from([8443]),
            Path::new("/run/kwire-sandbox"),
        );
        assert_eq!(
            text,
            "sandbox 4242-0 (kwire sandbox up -f relay.yaml; process 4242 ended):
  deleted network namespace kwa4242x1
  removed record /run/kwire-sandbox/4242-0.json
note: port 8443, which a removed sandbox listened on, is in use again
sandbox 5000-0 left alone: its process 5000 (kwire sandbox up -f a.yaml) is running; stop it (Ctrl-C), or use --force
"
        );
    }

    #[test]
    fn a_dry_run_says_what_it_would_do() {
        let text = render_dry_run(&plan(), Path::new("/run/kwire-sandbox"));
        assert!(text.starts_with("sandbox 4242-0 (kwire sandbox up -f relay.yaml; process 4242 ended), would:\n  delete network namespace kwa4242x1\n"), "{text}");
    }

    #[test]
    fn without_check_a_failed_check_keeps_the_sandbox_up_and_says_what_failed() {
        let say = |check, failure| {
            staying_up(
                check,
                failure,
                "42-0",
                Path::new("/tmp/admin.kubeconfig"),
                Path::new("/run/kwire-sandbox/42-0.json"),
            )
        };
        assert_eq!(
            say(false, None).as_deref(),
            Some(
                "sandbox 42-0 is up (kubeconfig: /tmp/admin.kubeconfig; record: /run/kwire-sandbox/42-0.json); Ctrl-C tears it down"
            )
        );
        let failed = say(false, Some("1 of 9 pings failed")).expect("stays up");
        assert!(
            failed.starts_with("error: 1 of 9 pings failed\nsandbox 42-0 is up ("),
            "{failed}"
        );
        assert!(failed.ends_with("exits with code 1"), "{failed}");
        assert_eq!(say(true, None), None);
        assert_eq!(say(true, Some("1 of 9 pings failed")), None);
    }

    #[test]
    fn nothing_to_do_says_why() {
        let dir = Path::new("/run/kwire-sandbox");
        assert_eq!(
            render_down(&Plan::default(), &[], &BTreeSet::new(), dir),
            "nothing to do: no record of an ended sandbox in /run/kwire-sandbox\n"
        );
        let running = Plan {
            sandboxes: vec![],
            ..plan()
        };
        assert!(
            render_down(&running, &[], &BTreeSet::new(), dir)
                .ends_with("nothing to do: every recorded sandbox is running\n")
        );
        let unknown = Plan {
            not_found: vec!["1-0".into()],
            ..Plan::default()
        };
        assert_eq!(
            render_down(&unknown, &[], &BTreeSet::new(), dir),
            "no record 1-0 in /run/kwire-sandbox (already removed?)\nnothing to do: no such record\n"
        );
    }
}
