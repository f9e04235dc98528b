//! The command line an admin uses before anything runs: config and registration generation, and
//! start-up refusing a wrong config with a message naming the key.

use std::process::Command;

fn ferry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("run ferry")
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-cli-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn version_and_generated_config() {
    let out = ferry(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ferry {}", env!("CARGO_PKG_VERSION"))
    );
    let out = ferry(&["generate-config"]);
    assert!(out.status.success());
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .expect("example");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        checked_in,
        "generate-config prints config.example.yaml"
    );
}

#[test]
fn generate_registration_writes_fresh_private_tokens() {
    let dir = temp_dir();
    let config = dir.join("config.yaml");
    assert!(
        ferry(&["generate-config", "-o", config.to_str().expect("path")])
            .status
            .success()
    );
    let out = ferry(&[
        "-c",
        config.to_str().expect("path"),
        "generate-registration",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("registration.yaml");
    let text = std::fs::read_to_string(&path).expect("registration written next to the config");
    let reg: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
    let as_token = reg["as_token"].as_str().expect("as_token").to_owned();
    assert_eq!(as_token.len(), 64);
    assert_ne!(reg["as_token"], reg["hs_token"]);
    assert_eq!(reg["sender_localpart"], "ferrybot");
    assert_eq!(reg["namespaces"]["users"][1]["regex"], "@sim_.*:localhost");
    assert_eq!(reg["de.sorunome.msc2409.push_ephemeral"], true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the registration holds secrets");
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&as_token),
        "tokens are never printed"
    );
    let again = ferry(&[
        "-c",
        config.to_str().expect("path"),
        "generate-registration",
        "-o",
        dir.join("r2.yaml").to_str().expect("path"),
    ]);
    assert!(again.status.success());
    let second: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("r2.yaml")).expect("second"))
            .expect("yaml");
    assert_ne!(
        second["as_token"].as_str(),
        Some(as_token.as_str()),
        "fresh tokens each time"
    );
}

#[test]
fn a_wrong_config_value_stops_start_up_naming_the_key() {
    let dir = temp_dir();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .expect("example");
    for (from, to, key) in [
        ("type: sqlite", "type: mongodb", "database.type"),
        ("  port: 29318", "  port: 99999", "appservice.port"),
        (
            "\"localhost\": user",
            "\"localhost\": superuser",
            "bridge.permissions.localhost",
        ),
        ("  format: pretty", "  format: xml", "logging.format"),
        ("  level: info", "  level: \"[[\"", "logging.level"),
    ] {
        let config = dir.join("bad.yaml");
        std::fs::write(&config, example.replace(from, to)).expect("write");
        let out = ferry(&["-c", config.to_str().expect("path"), "run"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{key}: ferry must refuse to start"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "the error names `{key}`: {stderr}");
    }
    let out = ferry(&[
        "-c",
        dir.join("missing.yaml").to_str().expect("path"),
        "run",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}
