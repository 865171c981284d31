//! `tollgate-agent doctor` against real broken setups: each failing check
//! names the problem and its fix, and a working setup exits 0.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use std::path::PathBuf;

use anyhow::Result;
use tollgate_tests::locate::{SHIM, binary};
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

/// Writes an installer's wrapper script that runs the shim for
/// `shim_profile`, and points the AWS profile's credential_process at it.
fn install_wrapper(stack: &Stack, shim_profile: &str) -> Result<PathBuf> {
    let folder = stack.dir().join("opt/acme/bin");
    fs::create_dir_all(&folder)?;
    let script = folder.join("bedrock-creds");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Installed by Acme IT: Bedrock credentials through Tollgate.\nset -eu\nexec {} --profile {shim_profile} \"$@\"\n",
            binary(SHIM)?.display()
        ),
    )?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let config = stack
        .env_var("AWS_CONFIG_FILE")
        .expect("the stack sets AWS_CONFIG_FILE");
    fs::write(
        config,
        format!(
            "[profile {}]\ncredential_process = {}\nregion = us-east-1\n",
            stack.profile("bedrock"),
            script.display()
        ),
    )?;
    Ok(script)
}

#[test]
fn doctor_follows_wrapper_script() -> Result<()> {
    let stack = doctor_stack("bela")?;
    let name = stack.profile("bedrock").to_owned();
    let script = install_wrapper(&stack, &name)?;

    // The wrapper really works: the AWS CLI gets the agent's credentials
    // through it.
    let identity = stack.aws(&["sts", "get-caller-identity", "--profile", &name])?;
    identity.ensure_success("aws sts get-caller-identity through the wrapper")?;
    assert!(
        stack.sts_assume_role_calls() >= 1,
        "the wrapper never reached the agent"
    );

    let output = doctor(&stack)?;
    output.ensure_success("doctor with a wrapper script")?;
    let lines = check_lines(&output, "aws config");
    assert!(lines[0].starts_with("ok"), "{lines:?}");
    assert!(
        lines[0].contains(&script.display().to_string()),
        "the note names the script: {lines:?}"
    );
    assert!(lines[0].contains("wrapper script"), "{lines:?}");
    assert!(
        lines[0].contains(&format!("--profile {name}")),
        "the note quotes the script's line: {lines:?}"
    );
    Ok(())
}

#[test]
fn doctor_reports_wrapper_for_other_profile() -> Result<()> {
    let stack = doctor_stack("cyra")?;
    let name = stack.profile("bedrock").to_owned();
    let script = install_wrapper(&stack, "bedrock-staging")?;
    let output = doctor(&stack)?;
    assert!(
        !output.success(),
        "doctor passed a wrapper for another profile"
    );
    let lines = check_lines(&output, "aws config");
    assert!(lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(
        lines[0].contains(&script.display().to_string()),
        "{lines:?}"
    );
    assert!(
        lines[0].contains("Tollgate profile `bedrock-staging`"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!(
            "make `{}` run `tollgate-credential-process --profile {name}",
            script.display()
        )),
        "{lines:?}"
    );
    Ok(())
}

#[test]
fn doctor_lists_profiles_to_pick() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .profile(ProfileSpec::new("batch"))
        .start()?;
    let output = stack.agent_cli(&["doctor"])?;
    let lines = check_lines(&output, "config");
    assert!(!lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(lines[0].contains(stack.profile("bedrock")), "{lines:?}");
    assert!(lines[0].contains(stack.profile("batch")), "{lines:?}");
    assert!(lines[1].contains("--profile"), "{lines:?}");
    let skipped = check_lines(&output, "identity provider");
    assert!(skipped[0].starts_with("skip"), "{skipped:?}");
    assert!(!skipped[0].contains("invalid"), "{skipped:?}");
    Ok(())
}

#[test]
fn doctor_fix_names_invalid_key() -> Result<()> {
    let stack = doctor_stack("xena")?;
    let text = fs::read_to_string(stack.config_path())?;
    let port = format!("redirect_port = {}", stack.redirect_port("bedrock"));
    assert!(text.contains(&port), "{text}");
    stack.write_config_text(&text.replace(&port, "redirect_port = 0"))?;
    let output = doctor(&stack)?;
    let lines = check_lines(&output, "config");
    assert!(lines[0].starts_with("FAIL"), "{lines:?}");
    assert!(lines[1].contains("`redirect_port`"), "{lines:?}");
    assert!(lines[1].contains("1 to 65535"), "{lines:?}");
    assert!(!lines[1].contains("readable TOML file"), "{lines:?}");
    Ok(())
}
