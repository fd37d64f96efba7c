//! userlist.txt parsing: quoting, comments, secret kinds, and errors carrying line numbers.

use std::path::Path;

use super::super::{AuthFile, AuthFileError, Secret, md5_secret};

fn parse(text: &str) -> Result<AuthFile, AuthFileError> {
    AuthFile::parse(text, Path::new("userlist.txt"))
}

fn syntax_line(text: &str) -> (usize, String) {
    match parse(text) {
        Err(AuthFileError::Syntax { line, message, .. }) => (line, message),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$\
    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[test]
fn parses_all_kinds() {
    let text = format!(
        "; PgBouncer style comment\n\
         # hash comment\n\
         \n   \t\n\
         \"alice\" \"plain pw\"\n\
         \"bob\" \"md5{}\"\n\
         \t \"carol\"   \"{SCRAM}\"  \"extra\" field\n\
         \"dave\"\t\"md5notreallyhex\"\r\n\
         \"quo\"\"ted\" \"pa\"\"ss\"\"\"\n\
         \"empty\" \"\"",
        "53f48b7c4b76a86ce72276c5755f217d"
    );
    let f = parse(&text).unwrap();
    assert_eq!(f.len(), 6);
    assert!(!f.is_empty());
    assert_eq!(f.get("alice"), Some(&Secret::Plain("plain pw".into())));
    assert_eq!(
        f.get("bob"),
        Some(&Secret::Md5(md5_secret("postgres", "secret")))
    );
    match f.get("carol") {
        Some(Secret::Scram(s)) => {
            assert_eq!(s.iterations, 4096);
            assert_eq!(s.salt, b"saltsaltsaltsalt");
            assert_eq!(s.stored_key, [0; 32]);
            assert_eq!(s.server_key, [1; 32]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f.get("dave"),
        Some(&Secret::Plain("md5notreallyhex".into()))
    );
    assert_eq!(f.get("quo\"ted"), Some(&Secret::Plain("pa\"ss\"".into())));
    assert_eq!(f.get("empty"), Some(&Secret::Plain(String::new())));
    assert_eq!(f.get("nobody"), None);
    let mut users: Vec<&str> = f.users().collect();
    users.sort_unstable();
    assert_eq!(
        users,
        ["alice", "bob", "carol", "dave", "empty", "quo\"ted"]
    );
}

#[test]
fn empty_file_and_last_duplicate_wins() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("\n; only comments\n# here\n").unwrap().is_empty());
    let f = parse("\"u\" \"one\"\n\"u\" \"two\"\n").unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f.get("u"), Some(&Secret::Plain("two".into())));
}

#[test]
fn malformed_lines_report_line_numbers() {
    let ok = "\"a\" \"b\"\n; comment\n";
    let cases = [
        "user hunter2",
        "\"user\"",
        "\"user\"   ",
        "\"user\" hunter2",
        "\"user \"hunter2\"",
        "\"user\" \"hunter2",
        "\"unterminated",
        "\"\" \"hunter2\"",
        "\"user\"\"hunter2\"",
        "\"us\"er\" \"hunter2\"",
        "\"user\" \"hunter2\"extra",
        "\"user\" \"SCRAM-SHA-256$4096:c2FsdA==$!!!!:AAAA\"",
        "\"user\" \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA\"",
        "\"user\" \"SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA\"",
        "\"user\" \"SCRAM-SHA-256$4096\"",
    ];
    for case in cases {
        let (line, message) = syntax_line(&format!("{ok}{case}\n\"z\" \"z\"\n"));
        assert_eq!(line, 3, "{case}: {message}");
        // The message never repeats the secret column.
        assert!(
            !message.contains("hunter2") && !message.contains("c2FsdA"),
            "{message}"
        );
    }
    let bad_scram = SCRAM.replace("c2Fsd", "c2F!d");
    let (line, message) = syntax_line(&format!("\n\n\n\"x\" \"{bad_scram}\""));
    assert_eq!(line, 4);
    assert!(message.contains("salt"), "{message}");
    let display = match parse(&format!("\"x\" \"{bad_scram}\"")) {
        Err(e) => e.to_string(),
        Ok(_) => unreachable!(),
    };
    assert!(display.starts_with("userlist.txt:1: "), "{display}");
    assert!(!display.contains("AAAAAAAA"), "{display}");
}

#[test]
fn secret_parse_is_lenient() {
    // Outside the auth file, a malformed SCRAM-looking string is a cleartext password, as in PostgreSQL.
    assert_eq!(
        Secret::parse("SCRAM-SHA-256$x"),
        Secret::Plain("SCRAM-SHA-256$x".into())
    );
    assert!(Secret::try_parse("SCRAM-SHA-256$x").is_err());
    // Uppercase hex is not an md5 secret for PostgreSQL either.
    let upper = "md553F48B7C4B76A86CE72276C5755F217D";
    assert_eq!(Secret::parse(upper), Secret::Plain(upper.into()));
    assert!(matches!(
        Secret::parse("md553f48b7c4b76a86ce72276c5755f217d"),
        Secret::Md5(_)
    ));
    assert!(matches!(
        Secret::parse("md553f48b7c4b76a86ce72276c5755f217"),
        Secret::Plain(_)
    ));
    assert!(matches!(Secret::parse(SCRAM), Secret::Scram(_)));
    assert!(matches!(Secret::parse(""), Secret::Plain(_)));
    assert!(matches!(Secret::parse("md5é"), Secret::Plain(_)));
}

#[test]
fn load_reports_io_and_utf8_errors() {
    let dir = std::env::temp_dir().join(format!("h-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.txt");
    assert!(matches!(
        AuthFile::load(&missing),
        Err(AuthFileError::Io { .. })
    ));

    let good = dir.join("good.txt");
    std::fs::write(&good, "\"u\" \"p\"\n").unwrap();
    assert_eq!(AuthFile::load(&good).unwrap().len(), 1);

    let bad = dir.join("bad.txt");
    std::fs::write(&bad, b"\"u\" \"p\"\n\n\"v\" \"\xff\"\n").unwrap();
    match AuthFile::load(&bad) {
        Err(AuthFileError::Syntax { line, path, .. }) => {
            assert_eq!(line, 3);
            assert_eq!(path, bad);
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_lists_users_only() {
    let f = parse("\"alice\" \"TopSecret\"").unwrap();
    let d = format!("{f:?}");
    assert!(d.contains("alice") && !d.contains("TopSecret"), "{d}");
}
