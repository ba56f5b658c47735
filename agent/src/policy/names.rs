//! What a name may be: an interface name as Linux allows it, and the
//! names of VMs, subscriptions and offers; and how a value is shown in a
//! message (cut, control characters escaped), so that no message carries
//! a megabyte or a terminal escape.

use super::limits::MAX_NAME;

/// Linux's longest interface name (IFNAMSIZ less the NUL).
pub const MAX_IFNAME: usize = 15;

/// Checks an interface name as Linux would: 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:`, `%` (a name template), whitespace, NUL or other
/// control character.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".to_owned());
    }
    if name.len() > MAX_IFNAME {
        return Err(format!(
            "interface name `{}` is {} bytes long; Linux allows at most {MAX_IFNAME}",
            shown(name),
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name `{name}` is not allowed by Linux"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name `{}` contains {}, which Linux does not allow",
            name.escape_debug(),
            what_char(c)
        ));
    }
    Ok(())
}

/// How a character that is not allowed is named in a message.
pub(crate) fn what_char(c: char) -> String {
    match c {
        '\0' => "a NUL byte".to_owned(),
        c if c.is_whitespace() => "whitespace".to_owned(),
        c if c.is_control() => format!("the control character {}", c.escape_unicode()),
        c => format!("`{c}`"),
    }
}

/// A value as a message shows it: control characters escaped, and cut
/// after 64 characters.
pub fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// Checks a name (VM name, subscription id, offer name): at most
/// [`MAX_NAME`] bytes, no control characters.
pub fn check_name(key: &str, name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!(
            "`{key}` `{}` is {} bytes long; names are at most {MAX_NAME} bytes",
            shown(name),
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "`{key}` `{}` contains {}; names have none",
            shown(name),
            what_char(c)
        ));
    }
    Ok(())
}
