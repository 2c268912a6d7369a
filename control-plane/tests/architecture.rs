//! The folder tree is the architecture, and this test keeps it so (`make lint` runs it):
//! - the control-plane library's modules import each other without cycles;
//! - the domain (decision, window, tenants, tiers, billing) and the layers below it (storage,
//!   clock) never import the HTTP layer (`api`, `server`, or axum itself).
//!
//! Modules are the library's files. An edge is any path that names another module's item
//! (`use crate::tenants::Directory`, `super::Limit`, `crate::clock::Clock` in an expression
//! or a type), parsed with `syn`. A parent naming its own children (`mod`, `pub use child::X`)
//! is ownership, not a dependency, and is not an edge; a child naming its parent's items is.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module, as its path from the crate root (`["tenants", "directory"]`; the root is empty).
type Module = Vec<String>;

/// Top-level modules that must never import the HTTP layer.
const BELOW_HTTP: [&str; 7] = [
    "decision", "window", "tenants", "tiers", "billing", "storage", "clock",
];
const HTTP_LAYER: [&str; 2] = ["api", "server"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module of the library, by path, with its file.
fn modules() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, prefix: &Module, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            let mut module = prefix.clone();
            if path.is_dir() {
                module.push(stem);
                walk(&path, &module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                match stem.as_str() {
                    "main" => continue,
                    "lib" | "mod" => {}
                    _ => module.push(stem),
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), &Vec::new(), &mut out);
    out
}

/// Every path in a file that starts at `crate`, `super` or `self`, as written, and whether
/// it uses axum.
#[derive(Default)]
struct Paths {
    paths: Vec<Vec<String>>,
    uses_axum: bool,
}

impl Paths {
    fn record(&mut self, segments: Vec<String>) {
        match segments.first().map(String::as_str) {
            Some("crate" | "super" | "self") => self.paths.push(segments),
            Some("axum") => self.uses_axum = true,
            _ => {}
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut full = prefix.clone();
                if name.ident != "self" {
                    full.push(name.ident.to_string());
                }
                self.record(full);
            }
            syn::UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                full.push(rename.ident.to_string());
                self.record(full);
            }
            syn::UseTree::Glob(_) => self.record(prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.record(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // Unit tests may reach anywhere; they are not the architecture.
        let is_test = item.attrs.iter().any(|attr| {
            attr.path().is_ident("cfg")
                && attr
                    .parse_args::<syn::Ident>()
                    .is_ok_and(|arg| arg == "test")
        });
        if !is_test {
            syn::visit::visit_item_mod(self, item);
        }
    }
}

/// The module a path written in `from` names: the longest module prefix of the resolved path.
fn target(from: &Module, path: &[String], modules: &BTreeMap<Module, PathBuf>) -> Module {
    let mut resolved = from.clone();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            resolved.clear();
            rest = &path[1..];
        }
        _ => {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        resolved.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
    }
    for segment in rest {
        let mut deeper = resolved.clone();
        deeper.push(segment.clone());
        if !modules.contains_key(&deeper) {
            break;
        }
        resolved = deeper;
    }
    resolved
}

struct Graph {
    edges: BTreeMap<Module, BTreeSet<Module>>,
    uses_axum: BTreeSet<Module>,
}

fn graph() -> Graph {
    let modules = modules();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut uses_axum = BTreeSet::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
        let mut paths = Paths::default();
        paths.visit_file(&ast);
        if paths.uses_axum {
            uses_axum.insert(module.clone());
        }
        let targets = edges.entry(module.clone()).or_default();
        for path in &paths.paths {
            let to = target(module, path, &modules);
            // A module naming itself or its own descendants owns them.
            if !to.starts_with(module) {
                targets.insert(to);
            }
        }
    }
    Graph { edges, uses_axum }
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// A cycle, if there is one, as the modules along it.
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|m| m == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = graph();
    assert!(
        graph.edges.len() > 30,
        "the walk found only {} modules",
        graph.edges.len()
    );
    if let Some(cycle) = find_cycle(&graph.edges) {
        let names: Vec<String> = cycle.iter().map(name).collect();
        panic!("import cycle: {}", names.join(" -> "));
    }
}

#[test]
fn the_domain_never_imports_the_http_layer() {
    let graph = graph();
    let mut offences = Vec::new();
    for (from, targets) in &graph.edges {
        let Some(top) = from.first() else { continue };
        if !BELOW_HTTP.contains(&top.as_str()) {
            continue;
        }
        for to in targets {
            if to.first().is_some_and(|t| HTTP_LAYER.contains(&t.as_str())) {
                offences.push(format!("{} imports {}", name(from), name(to)));
            }
        }
        if graph.uses_axum.contains(from) {
            offences.push(format!("{} uses axum", name(from)));
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_and_an_http_import_when_there_is_one() {
    let module = |path: &str| -> Module { path.split("::").map(str::to_owned).collect() };
    let edges = BTreeMap::from([
        (module("tiers"), BTreeSet::from([module("window")])),
        (
            module("window"),
            BTreeSet::from([module("tenants::directory")]),
        ),
        (
            module("tenants::directory"),
            BTreeSet::from([module("tiers")]),
        ),
    ]);
    let cycle = find_cycle(&edges).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);

    let modules: BTreeMap<Module, PathBuf> = [
        module("window"),
        module("window::memory"),
        module("api"),
        module("api::error"),
    ]
    .into_iter()
    .map(|m| (m, PathBuf::new()))
    .collect();
    let words = |path: &str| -> Vec<String> { path.split("::").map(str::to_owned).collect() };
    assert_eq!(
        target(&module("window::memory"), &words("super::Limit"), &modules),
        module("window")
    );
    assert_eq!(
        target(
            &module("window::memory"),
            &words("crate::api::error::ApiError"),
            &modules
        ),
        module("api::error")
    );
}
