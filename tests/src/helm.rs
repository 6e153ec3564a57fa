//! The Helm chart under `deploy/helm/residency`, rendered by the real Helm
//! (`cargo xtask setup` installs it), and the plain manifests in `deploy/kubernetes/`,
//! which are that chart rendered with its default values: `cargo xtask manifests`
//! writes them from [`plain_manifests`], and a test checks that they have not drifted.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The release name the plain manifests are rendered with.
pub const RELEASE: &str = "residency";

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/residency")
}

/// Where `cargo xtask setup` installs the project's Helm (pinned: the plain manifests
/// are compared with its rendering, which another Helm version may format otherwise).
pub const HELM: &str = "/usr/local/lib/residency/helm";

/// The project's Helm.
pub fn helm() -> Command {
    Command::new(HELM)
}

/// Runs helm with `args`; its stdout, or an error carrying its stderr.
pub fn run_helm(args: &[&str]) -> anyhow::Result<String> {
    let out = helm()
        .args(args)
        .output()
        .context("running helm (`cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "helm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `helm template` of the chart with the values files given (none: its defaults).
pub fn render(values: &[&Path]) -> anyhow::Result<String> {
    let chart = chart_dir();
    let mut args = vec![
        "template".to_owned(),
        RELEASE.to_owned(),
        chart.display().to_string(),
    ];
    for v in values {
        args.push("--values".to_owned());
        args.push(v.display().to_string());
    }
    run_helm(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The rendered documents, each with the template it came from (`# Source:` line).
pub fn documents(rendered: &str) -> Vec<(String, String)> {
    rendered
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter_map(|doc| {
            let source = doc
                .lines()
                .find_map(|l| l.strip_prefix("# Source: "))?
                .rsplit('/')
                .next()?
                .to_owned();
            Some((source, doc.trim_end().to_owned()))
        })
        .collect()
}

/// The files of `deploy/kubernetes/` and their text: the chart with its defaults,
/// the ConfigMap (the policy, the file operators edit) apart from the rest.
pub fn plain_manifests() -> anyhow::Result<Vec<(&'static str, String)>> {
    let docs = documents(&render(&[])?);
    let header = "# Rendered from deploy/helm/residency with its default values by `cargo xtask\n\
                  # manifests`: change the chart (or its values), then run that, never this file.\n";
    let join = |policy: bool| {
        let body: Vec<&str> = docs
            .iter()
            .filter(|(source, _)| (source == "configmap.yaml") == policy)
            .map(|(_, d)| d.as_str())
            .collect();
        format!("{header}---\n{}\n", body.join("\n---\n"))
    };
    Ok(vec![
        ("daemonset.yaml", join(false)),
        ("configmap.yaml", join(true)),
    ])
}
