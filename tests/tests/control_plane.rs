//! Smoke test of the local control plane fixture: the real binaries answer,
//! RBAC is enforced for ServiceAccount tokens, namespaces are per test.
//!
//! `cargo test -p kwire-tests --test control_plane` (builds the binaries with
//! tests/control-plane/build.sh first if they are missing).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kwire_tests::control_plane::ControlPlane;
use kwire_tests::wait::wait_for_async;

#[tokio::test]
async fn kubectl_answers() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    assert!(cp.kubectl_path().is_file());
    assert!(cp.helm_path().is_file());
    let out = cp.kubectl().args(["get", "ns", "-o", "name"]).output()?;
    assert!(
        out.status.success(),
        "kubectl get ns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8(out.stdout)?;
    assert!(names.lines().any(|l| l == "namespace/default"), "{names}");
    assert!(
        names.lines().any(|l| l == "namespace/kube-system"),
        "{names}"
    );

    let out = cp.kubectl().args(["version", "-o", "json"]).output()?;
    assert!(out.status.success());
    let version: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(server.starts_with("v1."), "server version {server}");

    let out = cp.helm().args(["version", "--short"]).output()?;
    assert!(
        out.status.success(),
        "helm version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn admin_lists_namespaces_and_gets_its_own() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("admin-lists").await?;
    let list = Api::<Namespace>::all(cp.client().await?)
        .list(&ListParams::default())
        .await?;
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    assert!(names.contains(&"default"), "{names:?}");
    assert!(names.contains(&ns.name()), "{names:?}");
    assert!(ns.name().starts_with("admin-lists-"));

    // The namespace is usable through the namespace's own client.
    let cms: Api<ConfigMap> = ns.api();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm).await?;
    assert_eq!(cms.get("hello").await?.data.unwrap_or_default()["k"], "v");
    ns.delete().await?;
    Ok(())
}

#[tokio::test]
async fn service_account_is_bound_by_rbac() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("rbac").await?;
    let sa = cp.client_for_service_account(ns.name(), "probe").await?;

    // Nothing grants it secrets cluster-wide: 403 from the real authorizer.
    let err = Api::<Secret>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .expect_err("a fresh ServiceAccount must not list secrets cluster-wide");
    match &err {
        kube::Error::Api(s) => assert!(s.is_forbidden(), "expected 403, got {s:?}"),
        other => panic!("expected a 403 ApiError, got {other:?}"),
    }

    // A Role + RoleBinding in its namespace lets it list configmaps there,
    // and only there.
    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-configmaps".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("probe-reads-configmaps".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "read-configmaps".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "probe".into(),
            namespace: Some(ns.name().into()),
            ..Subject::default()
        }]),
    };
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await?;
    Api::<ConfigMap>::namespaced(sa.clone(), ns.name())
        .list(&ListParams::default())
        .await?;
    let err = Api::<ConfigMap>::namespaced(sa, "default")
        .list(&ListParams::default())
        .await
        .expect_err("the RoleBinding only covers its own namespace");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.is_forbidden()),
        "{err:?}"
    );

    // A kubeconfig file for child processes works with kubectl too.
    let kubeconfig = cp.service_account_kubeconfig(ns.name(), "probe").await?;
    let out = std::process::Command::new(cp.kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(cp.run_dir().join("kubectl-cache"))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout)?,
        format!("system:serviceaccount:{}:probe", ns.name())
    );
    Ok(())
}

#[tokio::test]
async fn namespaces_are_per_test_and_deleted() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    let a = cp.namespace("per-test").await?;
    let b = cp.namespace("per-test").await?;
    assert_ne!(a.name(), b.name());
    let name = a.name().to_string();
    drop(a); // deletes it
    let api = Api::<Namespace>::all(cp.client().await?);
    // The namespace controller (kube-controller-manager) finalizes it.
    let (api, name) = (&api, name.as_str());
    wait_for_async(
        &format!("namespace {name} to be gone"),
        Duration::from_secs(60),
        || async move { Ok(api.get_opt(name).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn own_control_plane_starts_and_stops_cleanly() -> anyhow::Result<()> {
    let run_dir = std::env::temp_dir().join(format!("kwire-cp-own-{}", std::process::id()));
    let cp = tokio::task::spawn_blocking({
        let run_dir = run_dir.clone();
        move || ControlPlane::start(run_dir)
    })
    .await??;
    let pids = std::fs::read_to_string(run_dir.join("pids"))?;
    Api::<Namespace>::all(cp.client().await?)
        .get("kube-system")
        .await?;
    tokio::task::spawn_blocking(move || cp.stop()).await??;
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
    for line in pids.lines() {
        let pid = line.split_whitespace().nth(1).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        assert!(
            state.is_empty()
                || state
                    .rsplit(") ")
                    .next()
                    .is_some_and(|r| r.starts_with('Z')),
            "{line} still runs"
        );
    }
    Ok(())
}
