//! Tests of result sets: the row macro, formats, timestamps, binary numeric.
use super::*;

row! {
    /// A test row.
    pub struct TestRow {
        name: Text,
        kind = "type": OptText,
        n: Int4,
        big: Int8,
        total: Numeric,
        at: Time,
    }
}

#[test]
fn row_macro_names_and_types() {
    let names: Vec<_> = TestRow::COLUMNS.iter().map(|c| c.name).collect();
    assert_eq!(names, ["name", "type", "n", "big", "total", "at"]);
    let oids: Vec<_> = TestRow::COLUMNS.iter().map(|c| c.kind.oid()).collect();
    assert_eq!(oids, [25, 25, 23, 20, 1700, 25]);
    let rs = ResultSet::of(vec![TestRow {
        name: "a".into(),
        kind: None,
        n: -3,
        big: 7,
        total: 12345,
        at: 0,
    }]);
    assert_eq!(rs.text(0, "name").as_deref(), Some("a"));
    assert_eq!(rs.text(0, "type"), None);
    assert_eq!(rs.text(0, "n").as_deref(), Some("-3"));
    assert_eq!(rs.text(0, "total").as_deref(), Some("12345"));
    assert_eq!(rs.text(0, "at"), None);
}

#[test]
fn timestamps_are_utc_text() {
    assert_eq!(format_timestamp(1), "1970-01-01 00:00:00 UTC");
    assert_eq!(
        format_timestamp(1_709_210_096_000_000),
        "2024-02-29 12:34:56 UTC"
    );
    assert_eq!(
        format_timestamp(951_782_400_000_000),
        "2000-02-29 00:00:00 UTC"
    );
}

#[test]
fn numeric_binary_matches_postgres() {
    assert_eq!(numeric_binary(0), vec![0, 0, 0, 0, 0, 0, 0, 0]);
    // 12345 = [1, 2345], weight 1
    assert_eq!(
        numeric_binary(12345),
        vec![0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0x09, 0x29]
    );
    // 10000 = [1], weight 1 (the trailing zero digit is dropped)
    assert_eq!(numeric_binary(10_000), vec![0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
    let max = numeric_binary(u64::MAX.into());
    assert_eq!(&max[..2], &5i16.to_be_bytes());
}

#[test]
fn formats_resolve_like_bind() {
    assert_eq!(resolve_formats(&[], 2), Ok(vec![false, false]));
    assert_eq!(resolve_formats(&[1], 2), Ok(vec![true, true]));
    assert_eq!(resolve_formats(&[0, 1], 2), Ok(vec![false, true]));
    assert!(resolve_formats(&[0, 1, 1], 2).is_err());
}

#[test]
fn binary_cells() {
    let cols = TestRow::COLUMNS;
    let mut buf = BytesMut::new();
    write_data_row(
        &mut buf,
        cols,
        &[
            Cell::Text("x".into()),
            Cell::Null,
            Cell::Int(5),
            Cell::Int(-1),
            Cell::UInt(1),
            Cell::Time(1),
        ],
        &[true; 6],
    );
    let body = &buf[7..];
    // "x"
    assert_eq!(&body[..5], &[0, 0, 0, 1, b'x']);
    // NULL
    assert_eq!(&body[5..9], &[0xff; 4]);
    // int4 5
    assert_eq!(&body[9..17], &[0, 0, 0, 4, 0, 0, 0, 5]);
}
