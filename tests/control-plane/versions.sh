# shellcheck shell=bash disable=SC2034
# Pinned upstream versions of the local test control plane. Sourced by
# regen-go-mod.sh (which writes the go.mod/go.sum files from them) and by
# build.sh (whose up-to-date stamp hashes this file). After changing a
# version here, run ./regen-go-mod.sh, then ./build.sh.

# k8s.io/kubernetes: kube-apiserver, kube-controller-manager, kubectl.
# Its staging modules (k8s.io/api, k8s.io/client-go, ...) are published as
# v0.<minor>.<patch> of the same release.
KUBERNETES_VERSION=1.37.2
# go.etcd.io/etcd/server/v3 (etcdmain). Kubernetes 1.37 itself pins the
# etcd 3.7.0 client libraries and tests against etcd 3.7.0; the 3.6 server
# line is still supported by it and is what was asked for here.
ETCD_VERSION=3.6.16
# helm.sh/helm/v4 (cmd/helm).
HELM_VERSION=4.3.1
# The Go toolchain: all three go.mod files need go >= 1.26.0, so the
# installed go1.26.8 builds them ("local" = never download a toolchain).
# Were a newer one needed, this would become e.g. go1.27.3.
CONTROL_PLANE_GOTOOLCHAIN=local
