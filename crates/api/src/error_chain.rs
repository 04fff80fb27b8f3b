//! An error and its causes on one line, as the binary prints them and logs record them.

/// An error and its causes on one line, each message once: `{:#}` would print a cause twice
/// when an error also interpolates its source (sqlx's "error returned from database: {0}").
pub fn error_message(e: &anyhow::Error) -> String {
    join_causes(e.chain().map(ToString::to_string))
}

/// A std error and its sources on one line, each message once (see [`error_message`]).
pub(crate) fn std_error_message(e: &(dyn std::error::Error + 'static)) -> String {
    join_causes(std::iter::successors(Some(e), |e| e.source()).map(ToString::to_string))
}

fn join_causes(messages: impl Iterator<Item = String>) -> String {
    let mut out = String::new();
    for message in messages {
        if message.is_empty() || out.contains(&message) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_its_error_message_is_printed_once() {
        let cases: [(&[&str], &str); 4] = [
            (&["a"], "a"),
            (&["opening x", "cannot connect", "refused"], "opening x: cannot connect: refused"),
            (&["returned: 1049 Unknown database", "1049 Unknown database"], "returned: 1049 Unknown database"),
            (&["outer", "", "inner"], "outer: inner"),
        ];
        for (messages, expected) in cases {
            assert_eq!(join_causes(messages.iter().map(|m| m.to_string())), expected, "{messages:?}");
        }
    }
}
