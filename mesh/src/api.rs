//! `Mesh`: the kind's spec and status, defined in `kwire-crds` (`kwire_crds::v1alpha1::mesh`)
//! where `crdgen` registers it with the other kinds, and re-exported here under their
//! earlier path (see `docs/decisions/0010-mesh-kind.md`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

pub use kwire_crds::v1alpha1::mesh::*;

/// The Mesh CRD as it is installed: the one in `kwire_crds::crd::all()`.
pub fn crd() -> CustomResourceDefinition {
    kwire_crds::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "Mesh")
        .expect("the Mesh is a registered kind")
}

/// The openAPIV3Schema of [`crd`], as JSON.
pub fn schema() -> Value {
    kwire_crds::crd::schema_of(&crd())
}
