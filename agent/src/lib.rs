//! The egress-guard agent library: the policy engine, the datapath as the
//! agent drives it, and the commands of the `egress-guard` binary.

pub mod agent;
pub mod cmd;
pub mod datapath;
pub mod desired;
pub mod events;
pub mod metrics;
pub mod netdev;
pub mod placement;
pub mod policy;
pub mod state;
pub mod table;
pub mod watch;

/// An error and its causes, each once: "a: b: c". Our error enums often
/// print their source already; a cause whose text the message holds is not
/// repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
