//! `tollgate-agent doctor` against real broken setups: each failing check
//! names the problem and its fix, and a working setup exits 0.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use anyhow::Result;
use tollgate_tests::{ProfileSpec, RunOutput, Stack};

fn doctor_stack(login: &str) -> Result<Stack> {
    Stack::builder()
        .login(login)
        .backend()
        .profile(ProfileSpec::new("bedrock").quota())
        .start()
}

fn doctor(stack: &Stack) -> Result<RunOutput> {
    stack.agent_cli(&["doctor", "--profile", stack.profile("bedrock")])
}

/// Returns the output line of the check called `name` with its fix line.
fn check_lines(output: &RunOutput, name: &str) -> Vec<String> {
    let lines: Vec<&str> = output.stdout.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line
            .get(5..)
            .is_some_and(|rest| rest.starts_with(&format!("{name}:")))
        {
            found.push(line.to_string());
            if let Some(next) = lines.get(index + 1)
                && next.trim_start().starts_with("fix:")
            {
                found.push(next.to_string());
            }
        }
    }
    found
}

#[test]
fn doctor_passes_working_setup() -> Result<()> {
    let stack = doctor_stack("vera")?;
    stack.shim("bedrock")?.ensure_success("the shim")?;
    let output = doctor(&stack)?;
    output.ensure_success("doctor on a working setup")?;
    assert!(!output.stdout.contains("FAIL"), "{}", output.stdout);
    for name in [
        "config",
        "keyring",
        "runtime folder",
        "agent socket",
        "identity provider",
        "identity provider keys",
        "quota backend",
        "clock",
        "aws config",
        "aws credentials",
    ] {
        let lines = check_lines(&output, name);
        assert!(!lines.is_empty(), "no `{name}` check:\n{}", output.stdout);
    }
    assert!(
        check_lines(&output, "clock")[0].starts_with("ok"),
        "{}",
        output.stdout
    );
    assert!(
        check_lines(&output, "agent socket")[0].contains("accepts connections"),
        "{}",
        output.stdout
    );
    Ok(())
}

#[test]
fn doctor_reports_unreadable_config() -> Result<()> {
    let stack = doctor_stack("wanda")?;
    // Invalid UTF-8 cannot be read as text, even by root, who can read a
    // file with mode 000.
    fs::write(stack.config_path(), [0xff, 0xfe, 0x00, 0x9f])?;
    let output = doctor(&stack)?;
    assert!(!output.success(), "doctor passed an unreadable config");
    let lines = check_lines(&output, "config");
    assert!(lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(lines[0].contains("could not be read"), "{lines:?}");
    assert!(lines[1].contains("readable TOML file"), "{lines:?}");
    assert!(
        check_lines(&output, "identity provider")[0].starts_with("skip"),
        "{}",
        output.stdout
    );
    Ok(())
}

#[test]
fn doctor_reports_open_runtime_folder() -> Result<()> {
    let stack = doctor_stack("xena")?;
    fs::create_dir_all(stack.runtime_dir())?;
    fs::set_permissions(stack.runtime_dir(), fs::Permissions::from_mode(0o755))?;
    let output = doctor(&stack)?;
    assert!(!output.success(), "doctor passed a 0755 runtime folder");
    let lines = check_lines(&output, "runtime folder");
    assert!(lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(lines[0].contains("mode 0755"), "{lines:?}");
    assert!(lines[0].contains("chmod 700"), "{lines:?}");
    Ok(())
}

#[test]
fn doctor_reports_stopped_backend() -> Result<()> {
    let mut stack = doctor_stack("yuri")?;
    stack.backend_mut().stop();
    let output = doctor(&stack)?;
    assert!(!output.success(), "doctor passed a stopped backend");
    let lines = check_lines(&output, "quota backend");
    assert!(lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(lines[0].contains("/health failed"), "{lines:?}");
    assert!(lines[0].contains("fail_mode = \"closed\""), "{lines:?}");
    assert!(lines[1].contains("quota_url"), "{lines:?}");
    assert!(
        check_lines(&output, "identity provider")[0].starts_with("ok"),
        "{}",
        output.stdout
    );
    Ok(())
}

#[test]
fn doctor_reports_shadowing_credentials() -> Result<()> {
    let stack = doctor_stack("zola")?;
    let name = stack.profile("bedrock").to_owned();
    let credentials = stack
        .env_var("AWS_SHARED_CREDENTIALS_FILE")
        .expect("the stack sets AWS_SHARED_CREDENTIALS_FILE")
        .to_owned();
    fs::write(
        &credentials,
        format!("[{name}]\naws_access_key_id = AKIAOLDSTATICKEY\naws_secret_access_key = old\n"),
    )?;
    let output = doctor(&stack)?;
    assert!(!output.success(), "doctor passed a shadowing section");
    let lines = check_lines(&output, "aws credentials");
    assert!(lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(lines[0].contains(&format!("[{name}]")), "{lines:?}");
    assert!(
        lines[1].contains(&format!("delete the [{name}] section")),
        "{lines:?}"
    );

    // The AWS CLI really uses the shadowing keys: the shim never runs, so
    // the agent assumes no role.
    let identity = stack.aws(&["sts", "get-caller-identity", "--profile", &name])?;
    identity.ensure_success("aws sts get-caller-identity with static keys")?;
    assert_eq!(
        stack.sts_assume_role_calls(),
        0,
        "the CLI ran the shim despite the section"
    );
    Ok(())
}

#[test]
fn doctor_reports_missing_aws_profile() -> Result<()> {
    let stack = doctor_stack("abel")?;
    let config = stack
        .env_var("AWS_CONFIG_FILE")
        .expect("the stack sets AWS_CONFIG_FILE")
        .to_owned();
    fs::write(&config, "[profile other]\nregion = us-east-1\n")?;
    let output = doctor(&stack)?;
    assert!(!output.success());
    let lines = check_lines(&output, "aws config");
    assert!(lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(lines[1].contains("add to"), "{lines:?}");
    let name = stack.profile("bedrock");
    assert!(
        output.stdout.contains(&format!(
            "credential_process = tollgate-credential-process --profile {name}"
        )),
        "the fix shows the line to add:\n{}",
        output.stdout
    );
    Ok(())
}
