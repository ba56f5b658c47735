//! Loads each kernel program on its own and prints the verifier's figures,
//! whether it loads or not (a development aid: `cargo run -p
//! egress-guard-tests --example vstats`). Needs root.

use aya::{
    EbpfLoader, VerifierLogLevel,
    programs::{SchedClassifier, Xdp},
};

fn main() {
    for name in ["eg_xdp", "eg_tc"] {
        let mut ebpf = EbpfLoader::new()
            .verifier_log_level(if std::env::var_os("VLOG").is_some() {
                VerifierLogLevel::STATS | VerifierLogLevel::VERBOSE
            } else {
                VerifierLogLevel::STATS
            })
            .load(egress_guard::datapath::OBJECT)
            .expect("parsing the object");
        let prog = ebpf.program_mut(name).expect("program");
        let result = match name {
            "eg_xdp" => <&mut Xdp>::try_from(prog).unwrap().load(),
            _ => <&mut SchedClassifier>::try_from(prog).unwrap().load(),
        };
        match result {
            Ok(()) => {
                let info = ebpf.program(name).unwrap().info().unwrap();
                println!(
                    "{name}: loaded; {} insns, {} verified",
                    info.size_translated().unwrap_or(0) / 8,
                    info.verified_instruction_count().unwrap_or(0)
                );
            }
            Err(e) => {
                let text = format!("{e:?}");
                let stats: Vec<&str> = text
                    .split("\\n")
                    .filter(|l| {
                        l.contains("processed")
                            || l.contains("too large")
                            || l.contains("stack depth")
                    })
                    .collect();
                let last: String = text
                    .chars()
                    .rev()
                    .take(
                        std::env::var("VLOG")
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(1500),
                    )
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect();
                println!("{name}: FAILED {stats:?}");
                if stats.is_empty() || std::env::var_os("VLOG").is_some() {
                    println!("{last}");
                }
            }
        }
    }
}
