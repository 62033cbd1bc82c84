//! The chart's RBAC, installed on the local control plane: what the
//! operator's and the node daemon's ServiceAccounts may do, from
//! `kubectl auth can-i` (the whole list and targeted questions) and from
//! real requests made with their tokens. Least privilege, no wildcards, and
//! neither component can write the spec of a kwire object.
//!
//! `cargo test -p kwire-tests --test rbac -- --nocapture` prints the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kwire_tests::control_plane::ControlPlane;
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

/// Installs the chart with its default values as a release named after the
/// namespace (so cluster-scoped names never collide between tests).
fn install(cp: &ControlPlane, ns: &str) -> Result<String> {
    let release = ns.to_string();
    run_ok(
        cp.helm()
            .args(["install", &release])
            .arg(chart_dir())
            .args(["--namespace", ns]),
    )?;
    Ok(release)
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
    let text = run_ok(cp.kubectl().args([
        "auth",
        "can-i",
        "--list",
        "--namespace",
        ns,
        &format!("--as={}", subject(ns, sa)),
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
        ("interfaces.kwire.dev", "list watch"),
        ("peers.kwire.dev", "list watch"),
        ("routes.kwire.dev", "list watch"),
        ("networks.kwire.dev/status", "patch"),
        ("interfaces.kwire.dev/status", "patch"),
        ("peers.kwire.dev/status", "patch"),
        ("routes.kwire.dev/status", "patch"),
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
        ("secrets", "get"),
        ("events", "create patch"),
        ("events.events.k8s.io", "create patch"),
    ])
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
    check("create", "interfaces.kwire.dev", None, true, false, false),
    check("update", "interfaces.kwire.dev", None, true, false, false),
    check("patch", "interfaces.kwire.dev", None, true, false, false),
    check("delete", "interfaces.kwire.dev", None, true, false, false),
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
    // Keys.
    check("get", "secrets", None, true, true, true),
    check("get", "secrets", None, false, true, true),
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

/// No `*` in any rule of the release's Roles and ClusterRoles, as stored.
fn assert_installed_roles_have_no_wildcards(
    cp: &ControlPlane,
    ns: &str,
    release: &str,
) -> Result<usize> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut roles = Vec::new();
    for (kind, scope) in [("clusterroles", None), ("roles", Some(ns))] {
        let mut cmd = cp.kubectl();
        cmd.args(["get", kind, "-l", &selector, "-o", "json"]);
        if let Some(ns) = scope {
            cmd.args(["-n", ns]);
        }
        let list: Value = serde_json::from_str(&run_ok(&mut cmd)?)?;
        roles.extend(list["items"].as_array().cloned().unwrap_or_default());
    }
    ensure!(
        roles.len() == 3,
        "expected 2 ClusterRoles and 1 Role, found {}",
        roles.len()
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
    let release = install(cp, ns.name())?;
    let roles = assert_installed_roles_have_no_wildcards(cp, ns.name(), &release)?;
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
    install(cp, &ns_name)?;

    // An Interface and a key Secret, made by the admin.
    let admin = cp.client().await?;
    let iface: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kwire.dev/v1alpha1",
        "kind": "Interface",
        "metadata": {"name": "vm01-wg0"},
        "spec": {"nodeName": "vm01", "deviceName": "wg0", "addresses": ["10.0.0.1/24"]},
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
        // A key Secret by name: both; the list of Secrets: the operator only.
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns_name);
        secrets
            .get("vm01-wg0-key")
            .await
            .with_context(|| format!("{sa}: get Secret"))?;
        let list = secrets.list(&ListParams::default()).await;
        let list = if sa == OPERATOR {
            list.with_context(|| format!("{sa}: list Secrets"))?;
            "allowed"
        } else {
            is_forbidden(list).with_context(|| format!("{sa}: list Secrets"))?;
            "forbidden"
        };
        rows.push(format!(
            "{sa:<15} list Interfaces: allowed; patch/apply spec, delete: forbidden; apply status: allowed; get Secret: allowed; list Secrets: {list}"
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
