//! `egress-guard check` on hostile policy files (issue 13): for each, the
//! clear error with its `file:line:col`, exit status 2, at most 51 lines,
//! at once. Needs the agent binary (`$EGRESS_GUARD_BIN`), not root.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use egress_guard_tests::{
    hostile::{cases, check_cases},
    netns::{TempDir, agent_bin},
};

/// `check` on each hostile file: the clear error, exit status 2, at once.
#[test]
fn check_refuses_each_hostile_file_at_once() -> Result<()> {
    let _serial = crate::fixtures::serial::shared(module_path!());
    let dir = TempDir::new("check")?;
    let bin = agent_bin()?;
    let mut cases = cases();
    cases.extend(check_cases());
    let mut report = String::new();
    for case in &cases {
        let file: String = case
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path: PathBuf = dir.path().join(format!("{file}.yaml"));
        (case.install)(dir.path(), &path).with_context(|| {
            format!(
                "installing {} at {} (dir exists: {})",
                case.name,
                path.display(),
                dir.path().exists()
            )
        })?;
        let t = Instant::now();
        let out = Command::new(&bin)
            .args([
                "check",
                "--max-policy-bytes",
                if case.name.contains("max-policy") {
                    "4096"
                } else {
                    "268435456"
                },
                "--policy",
            ])
            .arg(&path)
            .output()?;
        let took = t.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2),
            "{}: exit {:?}\n{stderr}",
            case.name,
            out.status
        );
        ensure!(
            stderr.contains(case.says) && stderr.contains(&format!("{}:", path.display())),
            "{}: stderr does not say `{}`:\n{stderr}",
            case.name,
            case.says
        );
        ensure!(
            stderr.lines().count() <= 51,
            "{}: {} lines",
            case.name,
            stderr.lines().count()
        );
        ensure!(
            took < Duration::from_secs(5),
            "{}: took {took:?}",
            case.name
        );
        let _ = writeln!(
            report,
            "{}: {took:?}: {}",
            case.name,
            stderr.lines().next().unwrap_or("")
        );
    }
    print!("{report}");
    Ok(())
}
