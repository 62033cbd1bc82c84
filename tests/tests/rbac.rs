//! The chart's RBAC, installed on the local control plane: what the
//! operator's and the node daemon's ServiceAccounts may do, from
//! `kubectl auth can-i` (the whole list and targeted questions) and from
//! real requests made with their tokens. Least privilege, no wildcards, and
//! neither component can write the spec of a kwire object a user wrote: the
//! operator may write Interfaces (it generates one per Mesh member), and the
//! chart's admission policy limits that to Interfaces a Mesh controls.
//!
//! Key Secrets, per `nodeSecretAccess.mode` (docs/security.md): the node
//! daemons read none (`none`, the default), only those of the listed
//! namespaces (`namespaces`), or every one (`cluster`, opt-in); the
//! ValidatingAdmissionPolicy of the first two rejects, at apply, keys the
//! daemons could not read.
//!
//! `cargo test -p kwire-tests --test rbac -- --nocapture` prints the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kwire_tests::control_plane::ControlPlane;
use kwire_tests::wait::{wait_for, wait_for_async};
use serde_json::{Value, json};

const OPERATOR: &str = "kwire-operator";
const NODE: &str = "kwire-node";
/// A ServiceAccount nothing binds: what every account may do anyway
/// (discovery, self reviews), subtracted from the `--list` tables.
const BASELINE: &str = "kwire-rbac-baseline";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kwire")
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", describe(cmd)))
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("non-UTF-8 output")
}

/// Installs the chart as a release named after the namespace (so
/// cluster-scoped names never collide between tests), with the default
/// values and `values` (`--set`/`--set-json` arguments) on top.
fn install(cp: &ControlPlane, ns: &str, values: &[String]) -> Result<String> {
    let release = ns.to_string();
    run_ok(
        cp.helm()
            .args(["install", &release])
            .arg(chart_dir())
            .args(["--namespace", ns])
            .args(values),
    )?;
    Ok(release)
}

/// `--set nodeSecretAccess.mode=<mode>`, and for `namespaces` the list.
fn secret_access_values(mode: &str, namespaces: &[&str]) -> Result<Vec<String>> {
    let mut values = vec!["--set".to_string(), format!("nodeSecretAccess.mode={mode}")];
    if !namespaces.is_empty() {
        values.push("--set-json".into());
        values.push(format!(
            "nodeSecretAccess.namespaces={}",
            serde_json::to_string(namespaces)?
        ));
    }
    Ok(values)
}

fn subject(ns: &str, sa: &str) -> String {
    format!("system:serviceaccount:{ns}:{sa}")
}

/// Resource (with resource names, if any) → verbs, from
/// `kubectl auth can-i --list`. Non-resource URLs are left out.
type Permissions = BTreeMap<String, BTreeSet<String>>;

fn parse_can_i_list(text: &str) -> Result<Permissions> {
    let mut perms = Permissions::new();
    for line in text.lines().skip(1) {
        // Rows of non-resource URLs have an empty first column.
        if line.trim().is_empty() || line.starts_with(char::is_whitespace) {
            continue;
        }
        let (resource, rest) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("unexpected can-i row {line:?}"))?;
        // Three bracketed columns: non-resource URLs, resource names, verbs.
        let groups: Vec<&str> = rest
            .split('[')
            .skip(1)
            .map(|g| g.split(']').next().unwrap_or_default())
            .collect();
        ensure!(groups.len() == 3, "unexpected can-i row {line:?}");
        let key = if groups[1].trim().is_empty() {
            resource.to_string()
        } else {
            format!("{resource}[{}]", groups[1].trim())
        };
        perms
            .entry(key)
            .or_default()
            .extend(groups[2].split_whitespace().map(str::to_string));
    }
    Ok(perms)
}

fn can_i_list(cp: &ControlPlane, ns: &str, sa: &str) -> Result<(String, Permissions)> {
    can_i_list_in(cp, ns, ns, sa)
}

/// `kubectl auth can-i --list` in namespace `query_ns` for ServiceAccount
/// `sa_ns/sa`.
fn can_i_list_in(
    cp: &ControlPlane,
    query_ns: &str,
    sa_ns: &str,
    sa: &str,
) -> Result<(String, Permissions)> {
    let text = run_ok(cp.kubectl().args([
        "auth",
        "can-i",
        "--list",
        "--namespace",
        query_ns,
        &format!("--as={}", subject(sa_ns, sa)),
    ]))?;
    let perms = parse_can_i_list(&text)?;
    Ok((text, perms))
}

fn minus(perms: &Permissions, baseline: &Permissions) -> Permissions {
    perms
        .iter()
        .filter_map(|(k, verbs)| {
            let rest: BTreeSet<String> = match baseline.get(k) {
                Some(b) => verbs.difference(b).cloned().collect(),
                None => verbs.clone(),
            };
            (!rest.is_empty()).then(|| (k.clone(), rest))
        })
        .collect()
}

fn table(rows: &[(&str, &str)]) -> Permissions {
    rows.iter()
        .map(|(r, verbs)| {
            (
                r.to_string(),
                verbs.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

/// What `kubectl auth can-i --list` must show for the operator in its own
/// namespace, beyond what every account may do.
fn expected_operator() -> Permissions {
    table(&[
        ("networks.kwire.dev", "get list watch"),
        ("interfaces.kwire.dev", "list watch create patch delete"),
        ("peers.kwire.dev", "list watch"),
        ("routes.kwire.dev", "list watch"),
        ("meshes.kwire.dev", "list watch"),
        ("networks.kwire.dev/status", "patch"),
        ("interfaces.kwire.dev/status", "patch"),
        ("peers.kwire.dev/status", "patch"),
        ("routes.kwire.dev/status", "patch"),
        ("meshes.kwire.dev/status", "patch"),
        ("nodes", "list watch"),
        ("secrets", "get list watch create patch delete"),
        ("events.events.k8s.io", "create patch"),
        ("leases.coordination.k8s.io", "get create patch"),
    ])
}

fn expected_node() -> Permissions {
    table(&[
        ("networks.kwire.dev", "get list watch"),
        ("interfaces.kwire.dev", "get list watch"),
        ("peers.kwire.dev", "get list watch"),
        ("routes.kwire.dev", "get list watch"),
        ("interfaces.kwire.dev/status", "patch"),
        ("peers.kwire.dev/status", "patch"),
        ("routes.kwire.dev/status", "patch"),
        ("nodes", "get"),
        ("events", "create patch"),
        ("events.events.k8s.io", "create patch"),
    ])
}

/// [`expected_node`] in a namespace where the node daemons may read key
/// Secrets: `get` on top, never `list` or `watch`.
fn expected_node_reading_secrets() -> Permissions {
    let mut p = expected_node();
    p.insert("secrets".into(), ["get".to_string()].into());
    p
}

fn render_permissions(p: &Permissions) -> String {
    let mut s = String::new();
    for (resource, verbs) in p {
        let verbs: Vec<&str> = verbs.iter().map(String::as_str).collect();
        let _ = writeln!(s, "    {resource:<34} {}", verbs.join(" "));
    }
    s
}

/// One targeted `kubectl auth can-i` question and its expected answers.
struct Check {
    verb: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    /// Ask in the release namespace (true) or in `default` (false): the
    /// ClusterRoles apply everywhere, the leader election Role only at home.
    home: bool,
    operator: bool,
    node: bool,
}

const fn check(
    verb: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    home: bool,
    operator: bool,
    node: bool,
) -> Check {
    Check {
        verb,
        resource,
        subresource,
        home,
        operator,
        node,
    }
}

const CHECKS: &[Check] = &[
    // Desired state: both read it everywhere, nobody writes it.
    check("get", "interfaces.kwire.dev", None, true, false, true),
    check("list", "interfaces.kwire.dev", None, true, true, true),
    check("get", "networks.kwire.dev", None, false, true, true),
    check("list", "peers.kwire.dev", None, false, true, true),
    check("watch", "routes.kwire.dev", None, false, true, true),
    check("watch", "networks.kwire.dev", None, true, true, true),
    // The operator writes the Interfaces it generates for Meshes (the admission
    // policy keeps it off every other: `service_account_tokens_are_held_...`).
    check("create", "interfaces.kwire.dev", None, true, true, false),
    check("update", "interfaces.kwire.dev", None, true, false, false),
    check("patch", "interfaces.kwire.dev", None, true, true, false),
    check("delete", "interfaces.kwire.dev", None, true, true, false),
    check("patch", "meshes.kwire.dev", None, true, false, false),
    check("list", "meshes.kwire.dev", None, true, true, false),
    check("patch", "peers.kwire.dev", None, false, false, false),
    check("update", "peers.kwire.dev", None, false, false, false),
    check("patch", "routes.kwire.dev", None, true, false, false),
    check("patch", "networks.kwire.dev", None, true, false, false),
    check(
        "deletecollection",
        "routes.kwire.dev",
        None,
        true,
        false,
        false,
    ),
    // Observed state: the status subresources.
    check(
        "patch",
        "interfaces.kwire.dev",
        Some("status"),
        true,
        true,
        true,
    ),
    check(
        "patch",
        "interfaces.kwire.dev",
        Some("status"),
        false,
        true,
        true,
    ),
    check(
        "update",
        "interfaces.kwire.dev",
        Some("status"),
        true,
        false,
        false,
    ),
    check(
        "patch",
        "peers.kwire.dev",
        Some("status"),
        false,
        true,
        true,
    ),
    check(
        "patch",
        "routes.kwire.dev",
        Some("status"),
        true,
        true,
        true,
    ),
    check(
        "patch",
        "networks.kwire.dev",
        Some("status"),
        true,
        true,
        false,
    ),
    check(
        "update",
        "interfaces.kwire.dev",
        Some("finalizers"),
        true,
        false,
        false,
    ),
    // Keys: with the default nodeSecretAccess.mode (none) the node daemons
    // read no Secret; the other modes are in `node_secret_access`.
    check("get", "secrets", None, true, true, false),
    check("get", "secrets", None, false, true, false),
    check("list", "secrets", None, true, true, false),
    check("watch", "secrets", None, false, true, false),
    check("create", "secrets", None, true, true, false),
    check("update", "secrets", None, true, false, false),
    check("delete", "secrets", None, true, true, false),
    check("patch", "secrets", None, true, true, false),
    // Nodes: addresses for the operator, its own Node for the daemon.
    check("get", "nodes", None, true, false, true),
    check("list", "nodes", None, true, true, false),
    check("patch", "nodes", None, true, false, false),
    check("patch", "nodes", Some("status"), true, false, false),
    // Events.
    check("create", "events", None, false, false, true),
    check("create", "events.events.k8s.io", None, false, true, true),
    check("patch", "events.events.k8s.io", None, false, true, true),
    check("delete", "events", None, true, false, false),
    // Leader election: a Lease in the release namespace only.
    check("get", "leases.coordination.k8s.io", None, true, true, false),
    check(
        "create",
        "leases.coordination.k8s.io",
        None,
        true,
        true,
        false,
    ),
    check(
        "patch",
        "leases.coordination.k8s.io",
        None,
        true,
        true,
        false,
    ),
    check(
        "update",
        "leases.coordination.k8s.io",
        None,
        true,
        false,
        false,
    ),
    check(
        "delete",
        "leases.coordination.k8s.io",
        None,
        true,
        false,
        false,
    ),
    check(
        "create",
        "leases.coordination.k8s.io",
        None,
        false,
        false,
        false,
    ),
    // Nothing else.
    check("get", "pods", None, true, false, false),
    check("get", "configmaps", None, true, false, false),
    check(
        "create",
        "serviceaccounts",
        Some("token"),
        true,
        false,
        false,
    ),
    check(
        "create",
        "customresourcedefinitions.apiextensions.k8s.io",
        None,
        true,
        false,
        false,
    ),
    check(
        "bind",
        "clusterroles.rbac.authorization.k8s.io",
        None,
        true,
        false,
        false,
    ),
    check(
        "escalate",
        "clusterroles.rbac.authorization.k8s.io",
        None,
        true,
        false,
        false,
    ),
    check("impersonate", "serviceaccounts", None, true, false, false),
    check("*", "*", None, true, false, false),
];

fn can_i(cp: &ControlPlane, ns: &str, sa: &str, c: &Check) -> Result<bool> {
    let mut cmd = cp.kubectl();
    cmd.args(["auth", "can-i", c.verb, c.resource])
        .arg(format!("--as={}", subject(ns, sa)))
        .args(["--namespace", if c.home { ns } else { "default" }]);
    if let Some(sub) = c.subresource {
        cmd.arg(format!("--subresource={sub}"));
    }
    yes_or_no(cmd)
}

/// The answer of a `kubectl auth can-i <verb> <resource>` command.
fn yes_or_no(mut cmd: Command) -> Result<bool> {
    let out = output(&mut cmd)?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match (out.status.code(), answer.as_str()) {
        (Some(0), "yes") => Ok(true),
        (Some(1), "no") => Ok(false),
        _ => bail!(
            "{}: unexpected answer {answer:?} ({}): {}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The release's ClusterRoles and Roles (in every namespace), as stored.
fn installed_roles(cp: &ControlPlane, release: &str) -> Result<Vec<Value>> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut roles = Vec::new();
    for kind in ["clusterroles", "roles"] {
        let mut cmd = cp.kubectl();
        cmd.args(["get", kind, "-l", &selector, "-o", "json"]);
        if kind == "roles" {
            cmd.arg("--all-namespaces");
        }
        let list: Value = serde_json::from_str(&run_ok(&mut cmd)?)?;
        roles.extend(list["items"].as_array().cloned().unwrap_or_default());
    }
    Ok(roles)
}

/// The chart's full name for a release whose name contains "kwire"
/// (`kwire.fullname`): the release name, cut to 45 characters.
fn fullname(release: &str) -> String {
    let cut: String = release.chars().take(45).collect();
    cut.trim_end_matches('-').to_string()
}

/// `<kind>/<namespace>/<name>` of each role, sorted.
fn role_names(roles: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = roles
        .iter()
        .map(|r| {
            format!(
                "{}/{}{}",
                r["kind"].as_str().unwrap_or_default(),
                r["metadata"]["namespace"]
                    .as_str()
                    .map(|ns| format!("{ns}/"))
                    .unwrap_or_default(),
                r["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    names.sort();
    names
}

/// No `*` in any rule of the release's Roles and ClusterRoles, as stored,
/// and exactly the `expected` roles (`<kind>/[<namespace>/]<name>`).
fn assert_installed_roles_have_no_wildcards(
    cp: &ControlPlane,
    release: &str,
    expected: &[String],
) -> Result<usize> {
    let roles = installed_roles(cp, release)?;
    let mut want = expected.to_vec();
    want.sort();
    ensure!(
        role_names(&roles) == want,
        "release {release} installed {:?}, expected {want:?}",
        role_names(&roles)
    );
    for role in &roles {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        ensure!(
            role["aggregationRule"].is_null(),
            "{name} aggregates other roles"
        );
        for rule in role["rules"].as_array().into_iter().flatten() {
            for field in [
                "apiGroups",
                "resources",
                "verbs",
                "resourceNames",
                "nonResourceURLs",
            ] {
                for v in rule[field].as_array().into_iter().flatten() {
                    ensure!(
                        !v.as_str().unwrap_or_default().contains('*'),
                        "{name} has a wildcard in {field}: {rule}"
                    );
                }
            }
        }
    }
    Ok(roles.len())
}

#[tokio::test]
async fn service_accounts_have_exactly_the_expected_permissions() -> Result<()> {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("kwire-rbac").await?;
    let release = install(cp, ns.name(), &[])?;
    let roles = assert_installed_roles_have_no_wildcards(
        cp,
        &release,
        &[
            format!("ClusterRole/{}-operator", fullname(&release)),
            format!("ClusterRole/{}-node", fullname(&release)),
            format!("Role/{}/{}-leader-election", ns.name(), fullname(&release)),
        ],
    )?;
    println!("no wildcard in the {roles} Roles/ClusterRoles of release {release}");

    let (_, baseline) = can_i_list(cp, ns.name(), BASELINE)?;
    let mut failures = Vec::new();
    for (sa, expected) in [(OPERATOR, expected_operator()), (NODE, expected_node())] {
        let (raw, perms) = can_i_list(cp, ns.name(), sa)?;
        let granted = minus(&perms, &baseline);
        println!(
            "kubectl auth can-i --list --namespace {ns} --as={subject}\n{raw}\n  granted by the chart (beyond what every account may do):\n{}",
            render_permissions(&granted),
            ns = ns.name(),
            subject = subject(ns.name(), sa),
        );
        if granted != expected {
            failures.push(format!(
                "{sa}: granted\n{}expected\n{}",
                render_permissions(&granted),
                render_permissions(&expected)
            ));
        }
        for verbs in granted.values() {
            ensure!(!verbs.contains("*"), "{sa} has a wildcard verb");
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<17} {:<50} {:<9} {:<15} {:<15}",
        "verb", "resource", "namespace", OPERATOR, NODE
    );
    for c in CHECKS {
        let resource = match c.subresource {
            Some(sub) => format!("{}/{sub}", c.resource),
            None => c.resource.to_string(),
        };
        let mut cells = Vec::new();
        for (sa, want) in [(OPERATOR, c.operator), (NODE, c.node)] {
            let got = can_i(cp, ns.name(), sa, c)?;
            let cell = if got { "yes" } else { "no" };
            if got == want {
                cells.push(cell.to_string());
            } else {
                cells.push(format!("{cell} (WRONG)"));
                failures.push(format!(
                    "{sa} can-i {} {resource} ({}): got {cell}, want {}",
                    c.verb,
                    if c.home {
                        "release namespace"
                    } else {
                        "default"
                    },
                    if want { "yes" } else { "no" }
                ));
            }
        }
        let _ = writeln!(
            out,
            "{:<17} {:<50} {:<9} {:<15} {:<15}",
            c.verb,
            resource,
            if c.home { "release" } else { "default" },
            cells[0],
            cells[1]
        );
    }
    println!(
        "kubectl auth can-i <verb> <resource> [--subresource=...] --as=<ServiceAccount>\n{out}"
    );
    ensure!(
        failures.is_empty(),
        "RBAC differs from the expected table:\n{}",
        failures.join("\n")
    );
    ns.delete().await?;
    Ok(())
}

fn interfaces(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kwire.dev", "v1alpha1", "Interface");
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "interfaces"),
    )
}

fn is_forbidden<T: std::fmt::Debug>(r: std::result::Result<T, kube::Error>) -> Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.is_forbidden() => Ok(()),
        other => bail!("expected 403 Forbidden, got {other:?}"),
    }
}

/// The same rules, met by real requests with TokenRequest tokens of the
/// chart's ServiceAccounts, made the way the components make them (kube's
/// client; status by server-side apply under each component's field manager).
#[tokio::test]
async fn service_account_tokens_are_held_to_the_same_rules() -> Result<()> {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("kwire-rbac-tokens").await?;
    let ns_name = ns.name().to_string();
    install(cp, &ns_name, &[])?;

    // An Interface and a key Secret, made by the admin. The Interface keeps
    // its key on its node: with the default nodeSecretAccess.mode (none) the
    // chart's admission policy, which applies to the whole cluster, rejects
    // any other.
    let admin = cp.client().await?;
    let iface: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kwire.dev/v1alpha1",
        "kind": "Interface",
        "metadata": {"name": "vm01-wg0"},
        "spec": {
            "nodeName": "vm01",
            "deviceName": "wg0",
            "addresses": ["10.0.0.1/24"],
            "keyMode": "NodeLocal",
        },
    }))?;
    interfaces(admin.clone(), &ns_name)
        .create(&PostParams::default(), &iface)
        .await
        .context("creating the Interface")?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vm01-wg0-key"},
        "stringData": {"privateKey": "not-a-real-key"},
    }))?;
    Api::<Secret>::namespaced(admin.clone(), &ns_name)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the Secret")?;

    let mut rows = Vec::new();
    for (sa, status) in [
        (OPERATOR, json!({"observedGeneration": 1})),
        (NODE, json!({"device": {"backend": "userspace"}})),
    ] {
        let client = cp.client_for_service_account(&ns_name, sa).await?;
        let api = interfaces(client.clone(), &ns_name);
        if sa == OPERATOR {
            // RBAC lets the operator write Interfaces; the chart's admission policy
            // refuses it any Interface no Mesh controls. A new policy takes a moment to
            // be enforced: wait for it with a dry run, which admission sees too.
            let dry = PatchParams {
                dry_run: true,
                ..PatchParams::default()
            };
            wait_for_async(
                "the admission policy to refuse the operator a user's Interface",
                Duration::from_secs(30),
                || {
                    let (api, dry) = (api.clone(), dry.clone());
                    async move {
                        let r = api
                            .patch(
                                "vm01-wg0",
                                &dry,
                                &Patch::Merge(json!({"spec": {"mtu": 1400}})),
                            )
                            .await;
                        Ok(is_forbidden(r).ok())
                    }
                },
            )
            .await?;
        }
        // Reading the desired state works: the operator lists and watches it, the node
        // daemon also gets single objects.
        let got = api.get("vm01-wg0").await;
        if sa == OPERATOR {
            is_forbidden(got).with_context(|| format!("{sa}: get Interface"))?;
        } else {
            got.with_context(|| format!("{sa}: get Interface"))?;
        }
        api.list(&ListParams::default())
            .await
            .with_context(|| format!("{sa}: list Interfaces"))?;
        // Writing the spec is refused, by merge patch and by apply.
        is_forbidden(
            api.patch(
                "vm01-wg0",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"mtu": 1400}})),
            )
            .await,
        )
        .with_context(|| format!("{sa}: merge patch of spec"))?;
        is_forbidden(
            api.patch(
                "vm01-wg0",
                &PatchParams::apply(sa).force(),
                &Patch::Apply(json!({
                    "apiVersion": "kwire.dev/v1alpha1",
                    "kind": "Interface",
                    "spec": {"mtu": 1400},
                })),
            )
            .await,
        )
        .with_context(|| format!("{sa}: apply of spec"))?;
        is_forbidden(api.delete("vm01-wg0", &DeleteParams::default()).await)
            .with_context(|| format!("{sa}: delete"))?;
        // Its own status fields, by server-side apply: allowed.
        api.patch_status(
            "vm01-wg0",
            &PatchParams::apply(sa),
            &Patch::Apply(json!({
                "apiVersion": "kwire.dev/v1alpha1",
                "kind": "Interface",
                "status": status,
            })),
        )
        .await
        .with_context(|| format!("{sa}: apply of status"))?;
        // Secrets: the operator gets and lists them; the node daemon, with
        // the default nodeSecretAccess.mode (none), neither.
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns_name);
        let get = secrets.get("vm01-wg0-key").await;
        let list = secrets.list(&ListParams::default()).await;
        let (get, list) = if sa == OPERATOR {
            get.with_context(|| format!("{sa}: get Secret"))?;
            list.with_context(|| format!("{sa}: list Secrets"))?;
            ("allowed", "allowed")
        } else {
            is_forbidden(get).with_context(|| format!("{sa}: get Secret"))?;
            is_forbidden(list).with_context(|| format!("{sa}: list Secrets"))?;
            ("forbidden", "forbidden")
        };
        rows.push(format!(
            "{sa:<15} list Interfaces: allowed; patch/apply spec, delete: forbidden; apply status: allowed; get Secret: {get}; list Secrets: {list}"
        ));
    }
    // The spec is untouched; both status fields arrived.
    let stored = interfaces(admin, &ns_name).get("vm01-wg0").await?;
    ensure!(
        stored.data["spec"]["mtu"].is_null(),
        "spec changed: {}",
        stored.data["spec"]
    );
    ensure!(
        stored.data["status"]["observedGeneration"] == 1,
        "{}",
        stored.data["status"]
    );
    ensure!(
        stored.data["status"]["device"]["backend"] == "userspace",
        "{}",
        stored.data["status"]
    );
    println!("requests with ServiceAccount tokens:\n{}", rows.join("\n"));
    ns.delete().await?;
    Ok(())
}

// Key Secrets, per nodeSecretAccess.mode.

/// The verbs on Secrets asked about for the node daemon: only `get` may ever
/// be granted.
const SECRET_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The three namespaces of a mode's test: the release's, one listed in
/// `nodeSecretAccess.namespaces` (with mode `namespaces`), one not listed.
struct Scope<'a> {
    mode: &'static str,
    home: &'a str,
    listed: &'a str,
    other: &'a str,
}

impl Scope<'_> {
    /// Whether the node daemons may get Secrets in `ns` under this mode.
    fn readable(&self, ns: &str) -> bool {
        match self.mode {
            "cluster" => true,
            "namespaces" => ns == self.listed,
            _ => false,
        }
    }

    fn namespaces(&self) -> [(&'static str, &str); 3] {
        [
            ("release", self.home),
            ("listed", self.listed),
            ("other", self.other),
        ]
    }
}

/// `kubectl auth can-i <verb> secrets` for the node daemon of `scope`, in
/// namespace `ns` or (None) in all namespaces.
fn node_can_i_secrets(
    cp: &ControlPlane,
    scope: &Scope,
    verb: &str,
    ns: Option<&str>,
) -> Result<bool> {
    let mut cmd = cp.kubectl();
    cmd.args(["auth", "can-i", verb, "secrets"])
        .arg(format!("--as={}", subject(scope.home, NODE)));
    match ns {
        Some(ns) => cmd.args(["--namespace", ns]),
        None => cmd.arg("--all-namespaces"),
    };
    yes_or_no(cmd)
}

fn secret(name: &str, key: &str) -> Result<Secret> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"privateKey": key},
    }))?)
}

/// Installs the chart with `nodeSecretAccess.mode=<mode>` and checks, in the
/// release namespace, a listed and an unlisted namespace: the roles
/// installed, `kubectl auth can-i --list` and the verbs on Secrets, and real
/// requests made with the node daemon's token.
async fn node_secret_access(mode: &'static str) -> Result<()> {
    let cp = ControlPlane::shared().await?;
    let home = cp.namespace(&format!("kwire-keys-{mode}")).await?;
    let listed = cp.namespace("kwire-keys-listed").await?;
    let other = cp.namespace("kwire-keys-other").await?;
    let scope = Scope {
        mode,
        home: home.name(),
        listed: listed.name(),
        other: other.name(),
    };
    let list: Vec<&str> = if mode == "namespaces" {
        vec![scope.listed]
    } else {
        Vec::new()
    };
    let release = install(cp, scope.home, &secret_access_values(mode, &list)?)?;
    let full = fullname(&release);
    let mut roles = vec![
        format!("ClusterRole/{full}-operator"),
        format!("ClusterRole/{full}-node"),
        format!("Role/{}/{full}-leader-election", scope.home),
    ];
    match mode {
        "namespaces" => roles.push(format!("Role/{}/{full}-node-secrets", scope.listed)),
        "cluster" => roles.push(format!("ClusterRole/{full}-node-secrets")),
        _ => {}
    }
    assert_installed_roles_have_no_wildcards(cp, &release, &roles)?;
    let mut report = format!(
        "nodeSecretAccess.mode={mode}{}: roles {roles:?}\n",
        if list.is_empty() {
            String::new()
        } else {
            format!(", nodeSecretAccess.namespaces={list:?}")
        }
    );
    let mut failures = Vec::new();

    // Everything the node daemon may do in each namespace.
    for (label, ns) in scope.namespaces() {
        let (_, baseline) = can_i_list_in(cp, ns, scope.home, BASELINE)?;
        let (raw, perms) = can_i_list_in(cp, ns, scope.home, NODE)?;
        let granted = minus(&perms, &baseline);
        let expected = if scope.readable(ns) {
            expected_node_reading_secrets()
        } else {
            expected_node()
        };
        let _ = writeln!(
            report,
            "\nkubectl auth can-i --list --namespace {ns} ({label}) --as={}\n{raw}",
            subject(scope.home, NODE)
        );
        if granted != expected {
            failures.push(format!(
                "{label} namespace {ns}: granted\n{}expected\n{}",
                render_permissions(&granted),
                render_permissions(&expected)
            ));
        }
    }

    // Each verb on Secrets, in each namespace and across all of them.
    let _ = writeln!(
        report,
        "kubectl auth can-i <verb> secrets --as={} [--namespace <ns> | --all-namespaces]",
        subject(scope.home, NODE)
    );
    let _ = writeln!(
        report,
        "    {:<17} {:<9} {:<9} {:<9} {:<15}",
        "verb", "release", "listed", "other", "all namespaces"
    );
    for verb in SECRET_VERBS {
        let mut cells = Vec::new();
        let places = scope
            .namespaces()
            .map(|(label, ns)| (label, Some(ns)))
            .into_iter()
            .chain([("all namespaces", None)]);
        for (label, ns) in places {
            let want = *verb == "get"
                && match ns {
                    Some(ns) => scope.readable(ns),
                    None => mode == "cluster",
                };
            let got = node_can_i_secrets(cp, &scope, verb, ns)?;
            let cell = if got { "yes" } else { "no" };
            if got == want {
                cells.push(cell.to_string());
            } else {
                cells.push(format!("{cell} (WRONG)"));
                failures.push(format!("can-i {verb} secrets in {label}: got {cell}"));
            }
        }
        let _ = writeln!(
            report,
            "    {verb:<17} {:<9} {:<9} {:<9} {:<15}",
            cells[0], cells[1], cells[2], cells[3]
        );
    }

    // Real requests with a token of the node daemon's ServiceAccount.
    let admin = cp.client().await?;
    for (_, ns) in scope.namespaces() {
        Api::<Secret>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &secret("probe-key", ns)?)
            .await
            .with_context(|| format!("creating Secret {ns}/probe-key"))?;
    }
    let node = cp.client_for_service_account(scope.home, NODE).await?;
    let _ = writeln!(
        report,
        "\nrequests with a token of {}:",
        subject(scope.home, NODE)
    );
    for (label, ns) in scope.namespaces() {
        let api = Api::<Secret>::namespaced(node.clone(), ns);
        let got = api.get("probe-key").await;
        let get = if scope.readable(ns) {
            let s = got.with_context(|| format!("node: get Secret {ns}/probe-key"))?;
            let value = s
                .data
                .as_ref()
                .and_then(|d| d.get("privateKey"))
                .map(|v| v.0.clone());
            ensure!(value.as_deref() == Some(ns.as_bytes()), "{ns}: {value:?}");
            "200 OK (the key)"
        } else {
            is_forbidden(got).with_context(|| format!("node: get Secret {ns}/probe-key"))?;
            "403 Forbidden"
        };
        is_forbidden(api.list(&ListParams::default()).await)
            .with_context(|| format!("node: list Secrets in {ns}"))?;
        let _ = writeln!(
            report,
            "    GET  secrets/probe-key in {label:<7} ({ns}): {get}; LIST secrets there: 403 Forbidden"
        );
    }
    is_forbidden(Api::<Secret>::all(node).list(&ListParams::default()).await)
        .context("node: list Secrets in all namespaces")?;
    let _ = writeln!(report, "    LIST secrets in all namespaces: 403 Forbidden");
    println!("{report}");
    ensure!(
        failures.is_empty(),
        "nodeSecretAccess.mode={mode}:\n{}",
        failures.join("\n")
    );

    // Cluster-scoped objects (ClusterRoles, the admission policy) go with the
    // release.
    run_ok(
        cp.helm()
            .args(["uninstall", &release, "--namespace", scope.home]),
    )?;
    for ns in [home, listed, other] {
        ns.delete().await?;
    }
    Ok(())
}

#[tokio::test]
async fn node_daemons_read_no_secret_with_mode_none() -> Result<()> {
    node_secret_access("none").await
}

#[tokio::test]
async fn node_daemons_read_secrets_of_the_listed_namespaces_only_with_mode_namespaces() -> Result<()>
{
    node_secret_access("namespaces").await
}

#[tokio::test]
async fn node_daemons_read_every_secret_only_when_opted_in_with_mode_cluster() -> Result<()> {
    node_secret_access("cluster").await
}

/// `helm template` with values that do not fit together fails and says what
/// to set.
#[tokio::test]
async fn inconsistent_node_secret_access_values_fail_with_what_to_do() -> Result<()> {
    let cp = ControlPlane::shared().await?;
    for (values, mentions) in [
        (
            vec!["--set", "nodeSecretAccess.mode=namespaces"],
            "nodeSecretAccess.namespaces is empty",
        ),
        (
            vec!["--set-json", "nodeSecretAccess.namespaces=[\"keys\"]"],
            "only used with nodeSecretAccess.mode namespaces, not none",
        ),
        (
            vec!["--set", "nodeSecretAccess.mode=all"],
            "/nodeSecretAccess/mode",
        ),
        (
            vec![
                "--set",
                "nodeSecretAccess.mode=namespaces",
                "--set-json",
                "nodeSecretAccess.namespaces=[\"Not_A_Namespace\"]",
            ],
            "/nodeSecretAccess/namespaces/0",
        ),
    ] {
        let out = output(
            cp.helm()
                .args(["template", "kwire"])
                .arg(chart_dir())
                .args(&values),
        )?;
        let text = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && text.contains(mentions),
            "helm template {values:?}: {}\n{text}",
            out.status
        );
        println!(
            "helm template {}: {}",
            values.join(" "),
            text.lines()
                .find(|l| l.contains(mentions))
                .unwrap_or_default()
                .trim()
        );
    }
    // Without the admission policy of the keys nothing of it is rendered (the policy
    // on the operator's Interface writes stays: it does not depend on key access).
    let out = run_ok(
        cp.helm()
            .args(["template", "kwire"])
            .arg(chart_dir())
            .args(["--set", "nodeSecretAccess.admissionPolicy=false"]),
    )?;
    ensure!(!out.contains("node-keys"), "{out}");
    ensure!(out.contains("name: kwire-operator-interfaces"), "{out}");
    Ok(())
}

// The admission policy.

/// What the API server answered to a write.
enum Answer {
    Accepted,
    Rejected(String),
}

impl Answer {
    fn rejected_with(&self, parts: &[&str]) -> bool {
        matches!(self, Answer::Rejected(m) if parts.iter().all(|p| m.contains(p)))
    }
}

/// `kubectl <args>` with `input` on stdin; a failure is an answer, not an
/// error, when the API server refused the request.
fn kubectl_answer(cp: &ControlPlane, args: &[&str], input: Option<&Value>) -> Result<Answer> {
    let mut cmd = cp.kubectl();
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", describe(&cmd)))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(serde_json::to_string(input)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        return Ok(Answer::Accepted);
    }
    ensure!(
        stderr.contains("denied request") || stderr.contains("is invalid"),
        "{} failed ({}): {stderr}",
        describe(&cmd),
        out.status
    );
    Ok(Answer::Rejected(stderr))
}

fn interface(name: &str, spec: Value) -> Value {
    let mut spec_all =
        json!({"nodeName": "vm01", "deviceName": "wg0", "addresses": ["10.0.0.1/24"]});
    if let (Some(all), Some(extra)) = (spec_all.as_object_mut(), spec.as_object()) {
        all.extend(extra.clone());
    }
    json!({
        "apiVersion": "kwire.dev/v1alpha1",
        "kind": "Interface",
        "metadata": {"name": name},
        "spec": spec_all,
    })
}

fn peer(name: &str, interface: &str, preshared_key: bool) -> Value {
    let mut spec = json!({
        "interface": interface,
        "remote": {"publicKey": "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730="},
        "allowedIPs": ["10.0.0.2/32"],
    });
    if preshared_key {
        spec["presharedKey"] = json!({"generate": true});
    }
    json!({
        "apiVersion": "kwire.dev/v1alpha1",
        "kind": "Peer",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// One write and the answer it must get.
struct Request<'a> {
    what: &'static str,
    ns: &'a str,
    args: Vec<String>,
    input: Option<Value>,
    /// None: accepted; Some(parts): rejected with a message holding them all.
    rejected_with: Option<Vec<String>>,
}

fn create<'a>(
    what: &'static str,
    ns: &'a str,
    object: Value,
    rejected_with: Option<Vec<String>>,
) -> Request<'a> {
    Request {
        what,
        ns,
        args: vec![
            "create".into(),
            "-n".into(),
            ns.into(),
            "-f".into(),
            "-".into(),
        ],
        input: Some(object),
        rejected_with,
    }
}

fn merge_patch<'a>(
    what: &'static str,
    ns: &'a str,
    object: &str,
    patch: Value,
    rejected_with: Option<Vec<String>>,
) -> Request<'a> {
    Request {
        what,
        ns,
        args: vec![
            "patch".into(),
            "-n".into(),
            ns.into(),
            object.into(),
            "--type=merge".into(),
            "-p".into(),
            patch.to_string(),
        ],
        input: None,
        rejected_with,
    }
}

fn strs(parts: &[&str]) -> Option<Vec<String>> {
    Some(parts.iter().map(|p| p.to_string()).collect())
}

/// Upgrades the release to `values` and waits until the API server enforces
/// them (policies reach admission through a watch), judged by `probe`: a
/// server-side dry run whose answer tells the new state from the old.
fn upgrade_and_wait(
    cp: &ControlPlane,
    release: &str,
    values: &[String],
    probe: &Request,
) -> Result<Duration> {
    run_ok(
        cp.helm()
            .args(["upgrade", release])
            .arg(chart_dir())
            .args(["--namespace", release, "--reuse-values"])
            .args(values),
    )?;
    let mut args: Vec<&str> = probe.args.iter().map(String::as_str).collect();
    args.push("--dry-run=server");
    let (_, took) = wait_for(
        &format!("{values:?} to be enforced ({})", probe.what),
        Duration::from_secs(60),
        || {
            let answer = kubectl_answer(cp, &args, probe.input.as_ref())?;
            Ok(match (&probe.rejected_with, &answer) {
                (None, Answer::Accepted) => Some(()),
                (Some(parts), _) => {
                    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                    answer.rejected_with(&parts).then_some(())
                }
                _ => None,
            })
        },
    )?;
    Ok(took)
}

/// Runs the writes, prints one line each, and returns what went wrong.
fn run_writes(
    cp: &ControlPlane,
    mode: &str,
    writes: &[Request],
    report: &mut String,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for w in writes {
        let args: Vec<&str> = w.args.iter().map(String::as_str).collect();
        let answer = kubectl_answer(cp, &args, w.input.as_ref())?;
        let ok = match (&w.rejected_with, &answer) {
            (None, Answer::Accepted) => true,
            (Some(parts), _) => {
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                answer.rejected_with(&parts)
            }
            _ => false,
        };
        let shown = match &answer {
            Answer::Accepted => "accepted".to_string(),
            Answer::Rejected(m) => format!("rejected: {m}"),
        };
        let _ = writeln!(
            report,
            "    {mode:<15} {:<48} {:<28} {}{shown}",
            w.what,
            w.ns,
            if ok { "" } else { "(WRONG) " }
        );
        if !ok {
            failures.push(format!("{mode}: {} in {}: {shown}", w.what, w.ns));
        }
    }
    Ok(failures)
}

/// The policy of modes `none` and `namespaces` rejects, at apply, an
/// Interface with its key in a Secret and a Peer with a pre-shared key where
/// the node daemons may not read Secrets, lets objects made before it be
/// edited, and is gone with mode `cluster` or `admissionPolicy: false`.
#[tokio::test]
async fn admission_policy_rejects_keys_the_node_daemons_cannot_read() -> Result<()> {
    // A policy applies to the whole cluster: another test's release would
    // reject this test's objects. This test has a control plane of its own.
    let run_dir = std::env::temp_dir().join(format!("kwire-rbac-admission-{}", std::process::id()));
    let cp = tokio::task::spawn_blocking(move || ControlPlane::start_with(run_dir, false, false))
        .await??;
    let home = cp.namespace("kwire-adm").await?;
    let listed = cp.namespace("kwire-adm-listed").await?;
    let other = cp.namespace("kwire-adm-other").await?;
    let (home, listed, other) = (home.name(), listed.name(), other.name());
    let mut report = format!(
        "admission of kwire objects (release namespace {home}, listed namespace {listed}, other {other})\n    {:<15} {:<48} {:<28} answer\n",
        "mode", "request", "namespace"
    );
    let mut failures = Vec::new();

    // Mode cluster: no policy; objects with keys in Secrets, made before any
    // policy exists.
    let release = install(&cp, home, &secret_access_values("cluster", &[])?)?;
    let policies = run_ok(cp.kubectl().args([
        "get",
        "validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        &format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=node"),
        "-o",
        "name",
    ]))?;
    ensure!(
        policies.trim().is_empty(),
        "mode cluster installed {policies}"
    );
    failures.extend(run_writes(
        &cp,
        "cluster",
        &[
            create(
                "Interface, key in a generated Secret",
                other,
                interface("legacy-wg0", json!({})),
                None,
            ),
            create(
                "Peer with a pre-shared key",
                other,
                peer("legacy-psk", "legacy-wg0", true),
                None,
            ),
        ],
        &mut report,
    )?);

    // Mode none.
    let none_msg = ["nodeSecretAccess.mode=none", "keyMode: NodeLocal"];
    let took = upgrade_and_wait(
        &cp,
        &release,
        &secret_access_values("none", &[])?,
        &create(
            "probe",
            listed,
            interface("probe-wg0", json!({})),
            strs(&none_msg),
        ),
    )?;
    let _ = writeln!(
        report,
        "    (mode none enforced {:.1}s after helm upgrade)",
        took.as_secs_f64()
    );
    failures.extend(run_writes(
        &cp,
        "none",
        &[
            create(
                "Interface, keyMode unset (a generated Secret)",
                listed,
                interface("a-wg0", json!({})),
                strs(&none_msg),
            ),
            create(
                "Interface, keyMode: Secret",
                listed,
                interface("b-wg0", json!({"keyMode": "Secret"})),
                strs(&none_msg),
            ),
            create(
                "Interface, privateKeySecretRef",
                listed,
                interface("c-wg0", json!({"privateKeySecretRef": {"name": "my-key"}})),
                strs(&none_msg),
            ),
            create(
                "Interface, keyMode: NodeLocal",
                listed,
                interface("local-wg0", json!({"keyMode": "NodeLocal"})),
                None,
            ),
            create(
                "Peer with a pre-shared key",
                listed,
                peer("local-psk", "local-wg0", true),
                strs(&["presharedKey", "nodeSecretAccess.mode=none"]),
            ),
            create(
                "Peer without a pre-shared key",
                listed,
                peer("local-peer", "local-wg0", false),
                None,
            ),
            merge_patch(
                "edit of an Interface made before (mtu)",
                other,
                "interface/legacy-wg0",
                json!({"spec": {"mtu": 1400}}),
                None,
            ),
            merge_patch(
                "edit of a Peer made before (keepalive)",
                other,
                "peer/legacy-psk",
                json!({"spec": {"persistentKeepalive": 25}}),
                None,
            ),
            merge_patch(
                "NodeLocal Interface moved to keyMode: Secret",
                listed,
                "interface/local-wg0",
                json!({"spec": {"keyMode": "Secret"}}),
                strs(&none_msg),
            ),
            merge_patch(
                "pre-shared key added to a Peer",
                listed,
                "peer/local-peer",
                json!({"spec": {"presharedKey": {"generate": true}}}),
                strs(&["presharedKey"]),
            ),
        ],
        &mut report,
    )?);

    // Mode namespaces: the listed namespace is readable, the others are not.
    let ns_msg = [listed, "nodeSecretAccess.namespaces", "keyMode: NodeLocal"];
    let took = upgrade_and_wait(
        &cp,
        &release,
        &secret_access_values("namespaces", &[listed])?,
        &create(
            "probe",
            other,
            interface("probe-wg0", json!({})),
            strs(&ns_msg),
        ),
    )?;
    let _ = writeln!(
        report,
        "    (mode namespaces enforced {:.1}s after helm upgrade)",
        took.as_secs_f64()
    );
    failures.extend(run_writes(
        &cp,
        "namespaces",
        &[
            create(
                "Interface, keyMode unset (a generated Secret)",
                listed,
                interface("keyed-wg0", json!({})),
                None,
            ),
            create(
                "Peer with a pre-shared key",
                listed,
                peer("keyed-psk", "keyed-wg0", true),
                None,
            ),
            create(
                "Interface, keyMode unset (a generated Secret)",
                other,
                interface("keyed-wg0", json!({})),
                strs(&ns_msg),
            ),
            create(
                "Peer with a pre-shared key",
                other,
                peer("keyed-psk", "legacy-wg0", true),
                strs(&["presharedKey", listed]),
            ),
            create(
                "Interface, keyMode: NodeLocal",
                other,
                interface("local-wg0", json!({"keyMode": "NodeLocal"})),
                None,
            ),
        ],
        &mut report,
    )?);

    // No policy without admissionPolicy, nor with mode cluster.
    let took = upgrade_and_wait(
        &cp,
        &release,
        &[
            "--set".into(),
            "nodeSecretAccess.mode=none".into(),
            "--set-json".into(),
            "nodeSecretAccess.namespaces=[]".into(),
            "--set".into(),
            "nodeSecretAccess.admissionPolicy=false".into(),
        ],
        &create("probe", other, interface("probe-wg0", json!({})), None),
    )?;
    let _ = writeln!(
        report,
        "    (admissionPolicy=false enforced {:.1}s after helm upgrade)",
        took.as_secs_f64()
    );
    failures.extend(run_writes(
        &cp,
        "none, no policy",
        &[create(
            "Interface, keyMode unset (a generated Secret)",
            other,
            interface("unchecked-wg0", json!({})),
            None,
        )],
        &mut report,
    )?);
    println!("{report}");
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
