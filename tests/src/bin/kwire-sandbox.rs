//! `kwire-sandbox up -f <manifests> [--check]`: kwire end to end on this one machine.
//!
//! Starts a local control plane, installs the chart with helm, makes one network namespace
//! per node named in the manifests, runs the operator and a node daemon per namespace,
//! applies the manifests, waits until everything is Ready and Connected, and pings through
//! every link and route. With `--check` it then tears everything down and exits 0 only if
//! every ping succeeded; without it, it stays up until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;

#[derive(Parser)]
#[command(
    name = "kwire-sandbox",
    version,
    about = "Run a kwire topology end to end on this machine, no cluster needed"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring a topology up.
    Up {
        /// Manifest files (Interfaces, Peers, Routes, Networks).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// The namespace the objects are applied into.
        #[arg(long, default_value = "kwire-sandbox")]
        namespace: String,
        /// Verify and tear down instead of staying up.
        #[arg(long)]
        check: bool,
        /// How long to wait for every object to be Ready.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let Cmd::Up {
        files,
        namespace,
        check,
        timeout,
    } = Cli::parse().command;
    if let Err(why) = can_run_network_tests() {
        bail!("the sandbox cannot run here: {why}");
    }
    eprintln!(
        "kwire sandbox: {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut sandbox = Sandbox::up(&files, &namespace, false).await?;
    sandbox
        .steps
        .start("every Interface, Peer and Route Ready and Connected");
    let waited = sandbox.wait_ready(timeout);
    if let Err(e) = &waited {
        eprintln!();
        eprintln!("{}", sandbox.status_table());
        bail!("{e}");
    }
    sandbox.steps.done();
    sandbox.steps.start("pings through every link and route");
    let pings = sandbox.expected_pings()?;
    let results = sandbox.ping_all(&pings);
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
        bail!("{failed} of {} pings failed", results.len());
    }
    if !check {
        eprintln!(
            "sandbox is up (kubeconfig: {}); Ctrl-C tears it down",
            sandbox.cp.admin_kubeconfig().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    eprintln!("tearing down");
    drop(sandbox);
    Ok(())
}
