//! Reading manifest files the way `kubectl apply -f` takes them: files, folders (their
//! `.yaml`, `.yml` and `.json` files, not recursively) and `-` for standard input;
//! multi-document YAML; `kind: List` documents (what `kubectl get -o yaml` prints) are
//! flattened into their items.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt as _;
use kwire_crds::manifest::KwireObject;
use kwire_crds::v1alpha1::{GROUP, VERSION};
use kwire_mesh::world::NodeInfo;
use serde_json::Value;

/// One document of one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The file it came from (`-` for standard input).
    pub source: String,
    /// Its position in that file, from 1, counting the items of a List one by one.
    pub index: usize,
    pub value: Value,
}

impl Document {
    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    pub fn name(&self) -> Option<&str> {
        self.value.pointer("/metadata/name").and_then(Value::as_str)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    /// Whether it is one of kwire's kinds.
    pub fn is_kwire(&self) -> bool {
        self.value.get("apiVersion").and_then(Value::as_str)
            == Some(format!("{GROUP}/{VERSION}").as_str())
    }

    /// `Kind/name`, as lint prints it.
    pub fn label(&self) -> String {
        format!(
            "{}/{}",
            self.kind().unwrap_or("<no kind>"),
            self.name().unwrap_or("<unnamed>")
        )
    }

    /// Where it is, for messages: `file#2`.
    pub fn location(&self) -> String {
        format!("{}#{}", self.source, self.index)
    }
}

/// A file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {message}")]
    Yaml { path: String, message: String },
}

/// The files named on the command line, expanded (folders) and sorted within a folder.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| ReadError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    let io = |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(io)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(io)
    }
}

/// The documents of one text; empty documents are skipped and Lists flattened.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, ReadError> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ReadError::Yaml {
        path: source.to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for value in values.into_iter().filter(|v| !v.is_null()) {
        let is_list = value.get("kind").and_then(Value::as_str) == Some("List")
            || value
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List") && value.get("items").is_some());
        let items = match (is_list, value.get("items").and_then(Value::as_array)) {
            (true, Some(items)) => items.clone(),
            _ => vec![value],
        };
        for item in items {
            out.push(Document {
                source: source.to_string(),
                index: out.len() + 1,
                value: item,
            });
        }
    }
    Ok(out)
}

/// Every document of every file named, in order.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, ReadError> {
    let mut out = Vec::new();
    for path in expand_paths(paths)? {
        let text = read_text(&path)?;
        out.extend(parse_documents(&path.display().to_string(), &text)?);
    }
    Ok(out)
}

/// Puts objects without a namespace into `namespace`, as `kubectl apply -n` would.
pub fn default_namespace(documents: &mut [Document], namespace: &str) {
    for d in documents {
        if d.namespace().is_none()
            && let Some(metadata) = d.value.get_mut("metadata").and_then(Value::as_object_mut)
        {
            metadata.insert("namespace".into(), Value::String(namespace.to_string()));
        }
    }
}

/// A document as a typed kwire object; the error says why it does not fit the type.
pub fn to_object(document: &Document) -> Result<KwireObject, String> {
    let kind = document.kind().unwrap_or_default().to_string();
    if !document.is_kwire() {
        return Ok(KwireObject::Other {
            kind,
            value: document.value.clone(),
        });
    }
    let value = document.value.clone();
    let typed = match kind.as_str() {
        "Network" => serde_json::from_value(value).map(|o| KwireObject::Network(Box::new(o))),
        "Interface" => serde_json::from_value(value).map(|o| KwireObject::Interface(Box::new(o))),
        "Peer" => serde_json::from_value(value).map(|o| KwireObject::Peer(Box::new(o))),
        "Route" => serde_json::from_value(value).map(|o| KwireObject::Route(Box::new(o))),
        _ => {
            return Err(format!(
                "kind {kind} is not a kind of {GROUP}/{VERSION} (Network, Interface, Peer, Route)"
            ));
        }
    };
    typed.map_err(|e| e.to_string())
}

/// The typed objects of documents that fit their type (the others are skipped: lint
/// reports them).
pub fn objects(documents: &[Document]) -> Vec<KwireObject> {
    documents.iter().filter_map(|d| to_object(d).ok()).collect()
}

/// Reads files into typed objects, failing on the first document that does not fit.
pub fn load_objects(paths: &[PathBuf], namespace: &str) -> anyhow::Result<Vec<KwireObject>> {
    typed_objects(read_documents(paths)?, namespace)
}

/// Files read for the offline commands: the typed objects, the Meshes and the Node
/// documents (the default node list of Meshes).
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub objects: Vec<KwireObject>,
    pub meshes: Vec<kwire_mesh::Mesh>,
    pub nodes: Vec<kwire_mesh::MeshNode>,
}

/// Reads files into typed objects and Meshes, failing on the first document that does not
/// fit its type.
pub fn load_with_meshes(paths: &[PathBuf], namespace: &str) -> anyhow::Result<Loaded> {
    split_meshes(read_documents(paths)?, namespace)
}

/// [`load_with_meshes`] once the files are read.
pub fn split_meshes(mut documents: Vec<Document>, namespace: &str) -> anyhow::Result<Loaded> {
    default_namespace(&mut documents, namespace);
    let (meshes, others): (Vec<Document>, Vec<Document>) =
        documents.into_iter().partition(crate::mesh::is_mesh);
    for d in &meshes {
        crate::mesh::to_mesh(d).map_err(|e| {
            anyhow::anyhow!(
                "{} ({}): {e} (run kwire lint on it)",
                d.location(),
                d.label()
            )
        })?;
    }
    Ok(Loaded {
        nodes: crate::mesh::nodes_in_manifests(&others),
        objects: typed_objects(others, namespace)?,
        meshes: crate::mesh::meshes_of(&meshes),
    })
}

/// Documents into typed objects, in `namespace` when they name none, failing on the first
/// one that does not fit its type.
pub fn typed_objects(
    mut documents: Vec<Document>,
    namespace: &str,
) -> anyhow::Result<Vec<KwireObject>> {
    default_namespace(&mut documents, namespace);
    documents
        .iter()
        .map(|d| {
            to_object(d).map_err(|e| {
                anyhow::anyhow!(
                    "{} ({}): {e} (run kwire lint on it)",
                    d.location(),
                    d.label()
                )
            })
        })
        .collect()
}

/// The Nodes among the objects (`kind: Node` documents), for their addresses.
pub fn nodes_of(objects: &[KwireObject]) -> Vec<NodeInfo> {
    objects
        .iter()
        .filter_map(|o| match o {
            KwireObject::Other { kind, value } if kind == "Node" => {
                serde_json::from_value::<Node>(value.clone()).ok()
            }
            _ => None,
        })
        .map(|n| {
            let mut info = NodeInfo::from_node(&n);
            info.name = n.name_any();
            info
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_flattened_and_empty_documents_skipped() {
        let text = "---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s1}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s2}\n---\napiVersion: kwire.dev/v1alpha1\nkind: Network\nmetadata: {name: net}\nspec: {cidr: 10.1.0.0/24}\n";
        let docs = parse_documents("x.yaml", text).unwrap();
        let labels: Vec<String> = docs.iter().map(Document::label).collect();
        assert_eq!(labels, ["Secret/s1", "Secret/s2", "Network/net"]);
        assert_eq!(docs[2].location(), "x.yaml#3");
        assert!(docs[2].is_kwire() && !docs[0].is_kwire());
    }

    #[test]
    fn objects_without_a_namespace_get_the_default_one() {
        let mut docs = parse_documents(
            "x",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b, namespace: other}\n",
        )
        .unwrap();
        default_namespace(&mut docs, "seed");
        assert_eq!(docs[0].namespace(), Some("seed"));
        assert_eq!(docs[1].namespace(), Some("other"));
    }

    #[test]
    fn a_document_of_the_wrong_shape_says_which_field() {
        let docs = parse_documents(
            "x",
            "apiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata: {name: a}\nspec: {nodeName: a, listenPort: fifty, addresses: [10.1.0.1/24]}\n",
        )
        .unwrap();
        let error = to_object(&docs[0]).unwrap_err();
        assert!(error.contains("invalid type"), "{error}");
    }

    #[test]
    fn nodes_in_the_files_give_their_addresses() {
        let docs = parse_documents(
            "x",
            "apiVersion: v1\nkind: Node\nmetadata: {name: b}\nstatus:\n  addresses:\n  - {type: InternalIP, address: 10.211.55.11}\n",
        )
        .unwrap();
        let nodes = nodes_of(&objects(&docs));
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].endpoint_host(), Some("10.211.55.11"));
    }
}
