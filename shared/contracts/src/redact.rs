//! Keeping secrets out of logs and errors.

/// Returns `url` with any password (and any query string, which may carry tokens)
/// replaced by `***`, for logs and error messages.
///
/// `amqp://guest:guest@host:5672/%2f` → `amqp://guest:***@host:5672/%2f`.
/// Input that does not look like a URL with credentials is returned unchanged.
pub fn redact_url(url: &str) -> String {
    let (without_query, had_query) = match url.split_once('?') {
        Some((base, _)) => (base, true),
        None => (url, false),
    };
    let mut out = match without_query.split_once("://") {
        Some((scheme, rest)) => {
            // Userinfo ends at the last '@' before the first '/' of the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    let user = userinfo.split(':').next().unwrap_or("");
                    let masked = if userinfo.contains(':') {
                        format!("{user}:***")
                    } else {
                        user.to_string()
                    };
                    format!("{scheme}://{masked}{}", &rest[at..])
                }
                None => without_query.to_string(),
            }
        }
        None => without_query.to_string(),
    };
    if had_query {
        out.push_str("?***");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::redact_url;

    #[test]
    fn masks_passwords_and_queries() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/sluice"),
            "postgres://postgres@127.0.0.1:5432/sluice"
        );
        assert_eq!(
            redact_url("https://bucket/x.zip?X-Amz-Signature=abc"),
            "https://bucket/x.zip?***"
        );
        assert!(!redact_url("postgres://u:p%40ss@h/db").contains("p%40ss"));
    }
}
