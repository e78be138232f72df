//! The settings the deploy files give the services are settings the services accept: for
//! docker-compose.yml (variables at their defaults) and every rendered Kubernetes tree
//! (ConfigMap plus Secret, from `scripts/validate-deploy.py --print-env`), the
//! configuration loads, every connector reads its section and every destination parses —
//! exactly what a service checks at start, where a bad key stops it. The compose stack's
//! sandbox accepts its configuration, and the dev overlay and the compose stack point
//! every connector at the sandbox.

use std::collections::BTreeMap;
use std::process::Command;

use sluice_e2e::repo_root;

fn deploy_envs() -> BTreeMap<String, BTreeMap<String, String>> {
    let out = Command::new("python3")
        .args(["scripts/validate-deploy.py", "--print-env"])
        .current_dir(repo_root())
        .output()
        .expect("python3 runs (it is needed to render the Kubernetes overlays)");
    assert!(
        out.status.success(),
        "scripts/validate-deploy.py --print-env failed (PyYAML installed? .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON of the deployments' environments")
}

#[test]
fn every_deployment_configures_services_that_start() {
    let envs = deploy_envs();
    for name in [
        "docker-compose.yml",
        "k8s/base",
        "k8s/overlays/dev",
        "k8s/overlays/prod",
    ] {
        assert!(
            envs.contains_key(name),
            "{name} missing from {:?}",
            envs.keys()
        );
    }
    // The sandbox of the compose stack takes its configuration (every emulator's section,
    // unknown keys refused) from its environment.
    let sandbox = envs
        .get("docker-compose.yml sandbox")
        .expect("the compose sandbox's environment");
    let config = sluice_sandbox::Config::load(None, sandbox.clone(), &[]).unwrap_or_else(|e| {
        panic!("docker-compose.yml: the sandbox refuses its configuration: {e:#}")
    });
    // Building the router builds every emulator from its section (nothing is served).
    let _router = sluice_sandbox::router(config).unwrap_or_else(|e| {
        panic!("docker-compose.yml: the sandbox refuses its configuration: {e:#}")
    });
    for (name, env) in envs.iter().filter(|(name, _)| !name.ends_with(" sandbox")) {
        let settings = sluice_contracts::Settings::load_from(None, env.clone())
            .unwrap_or_else(|e| panic!("{name}: the configuration does not load: {e}"));
        sluice_connectors::Registry::from_settings(&settings)
            .unwrap_or_else(|e| panic!("{name}: a connector refuses its settings: {e}"));
        sluice_destinations::DestinationConfig::all(&settings)
            .unwrap_or_else(|e| panic!("{name}: a destination refuses its settings: {e}"));
        // Every credential the connectors need is there (a missing one would only show
        // when a job runs).
        for key in [
            "SLUICE__AMQP__URL",
            "SLUICE__DATABASE__URL",
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY",
            "SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__CLIENT_ID",
            "SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__CLIENT_SECRET",
        ] {
            assert!(env.contains_key(key), "{name}: no {key}");
        }
    }
    // Dev deployments extract nothing from the real APIs.
    for name in ["docker-compose.yml", "k8s/overlays/dev"] {
        let urls: Vec<(&String, &String)> = envs[name]
            .iter()
            .filter(|(k, _)| k.starts_with("SLUICE__CONNECTORS__") && k.ends_with("_URL"))
            .collect();
        assert!(urls.len() >= 4, "{name}: {urls:?}");
        for (key, url) in urls {
            assert!(
                url.starts_with("http://sandbox:9200")
                    || url.starts_with("http://sluice-sandbox:9200"),
                "{name}: {key} points at {url}, not at the sandbox"
            );
        }
    }
}
