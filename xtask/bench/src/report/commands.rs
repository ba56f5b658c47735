//! The report's last section: the commands each benchmark ran, with this
//! run's particulars (process ids, temporary directories) left out. The
//! prose is in `templates/commands.md` and `templates/commands/`.

use crate::{
    Results,
    template::{Templates, values},
};

pub fn section(t: &Templates, r: &Results) -> String {
    let mut items = Vec::new();
    if let Some(d) = &r.datapath {
        items.push(t.text(
            "commands/datapath.md",
            &values([("repeat", d.params.repeat.to_string())]),
        ));
    }
    if let Some(tp) = &r.throughput {
        items.push(t.text(
            "commands/throughput.md",
            &values([("commands", listed(&tp.commands))]),
        ));
    }
    if let Some(f) = &r.flood {
        items.push(t.text(
            "commands/drop.md",
            &values([
                ("commands", listed(&f.commands)),
                ("trafgen_config", f.trafgen_config.trim().to_owned()),
            ]),
        ));
    }
    if r.control.is_some() {
        items.push(t.text("commands/control.md", &values([])));
    }
    if let Some(ch) = &r.churn {
        let command = ch
            .command
            .replace("tapx0", "tapxN")
            .replace("qpeer0", "qpeerN");
        items.push(t.text(
            "commands/churn.md",
            &values([
                ("command", command),
                ("last", (ch.params.creations - 1).to_string()),
            ]),
        ));
    }
    let mut text = t.section(
        "commands.md",
        &values([(
            "items",
            items
                .iter()
                .map(|i| i.trim_end())
                .collect::<Vec<_>>()
                .join("\n"),
        )]),
    );
    if items.is_empty() {
        // The list's own end, as the report has always had it.
        text.push('\n');
    }
    text
}

/// One command a line, indented under its item.
fn listed(commands: &[String]) -> String {
    commands
        .iter()
        .map(|c| format!("   `{}`", generic(c)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` without this run's particulars: `egt-<pid>-<n>-` becomes
/// `egt-PID-N-`, and the temporary directory goes.
fn generic(text: &str) -> String {
    let tmp = std::env::temp_dir();
    let tmp = format!("{}/", tmp.display());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("egt-") {
        let (before, after) = rest.split_at(at);
        let after = &after[4..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let a = digits(after);
        let b = if a > 0 && after[a..].starts_with('-') {
            digits(&after[a + 1..])
        } else {
            0
        };
        if a > 0 && b > 0 && after[a + 1 + b..].starts_with('-') {
            // Inside the temporary directory, the whole directory goes.
            if let Some(prefix) = before.strip_suffix(&tmp) {
                out.push_str(prefix);
                let dir_end = after[a + 1 + b..]
                    .find('/')
                    .map_or(0, |i| a + 1 + b + i + 1);
                rest = &after[dir_end..];
                continue;
            }
            out.push_str(before);
            out.push_str("egt-PID-N-");
            rest = &after[a + 1 + b + 1..];
        } else {
            out.push_str(before);
            out.push_str("egt-");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::generic;

    #[test]
    fn run_particulars_are_left_out_of_commands() {
        let tmp = std::env::temp_dir();
        let cmd = format!(
            "ip netns exec egt-5216-1-vm-blk trafgen -i {}/egt-5216-2-bench/syn-flood.trafgen -P 1",
            tmp.display()
        );
        assert_eq!(
            generic(&cmd),
            "ip netns exec egt-PID-N-vm-blk trafgen -i syn-flood.trafgen -P 1"
        );
        assert_eq!(generic("ip -n egt-7-65-hv link"), "ip -n egt-PID-N-hv link");
        assert_eq!(generic("egt-x and egt-1-"), "egt-x and egt-1-");
    }
}
