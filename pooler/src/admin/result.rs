//! Result sets of the console: one row type yields both the RowDescription and the DataRows,
//! so column names and types cannot drift apart, in text or binary format.

use bytes::{BufMut, BytesMut};

use crate::proto::backend;

/// Column types, as PgBouncer declares them in its RowDescriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int4,
    Int8,
    Numeric,
    /// A timestamp sent as text ("YYYY-MM-DD HH:MM:SS UTC"), like PgBouncer's 'T'.
    Time,
    Bytea,
}

pub const TEXT_OID: u32 = 25;
pub const INT4_OID: u32 = 23;
pub const INT8_OID: u32 = 20;
pub const NUMERIC_OID: u32 = 1700;
pub const BYTEA_OID: u32 = 17;

impl Kind {
    pub fn oid(self) -> u32 {
        match self {
            Kind::Text | Kind::Time => TEXT_OID,
            Kind::Int4 => INT4_OID,
            Kind::Int8 => INT8_OID,
            Kind::Numeric => NUMERIC_OID,
            Kind::Bytea => BYTEA_OID,
        }
    }

    fn size(self) -> i16 {
        match self {
            Kind::Int4 => 4,
            Kind::Int8 => 8,
            _ => -1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    UInt(u64),
    /// µs since the Unix epoch; 0 = unknown (NULL).
    Time(u64),
    Bytes(Vec<u8>),
}

/// A row type made by [`row!`].
pub trait Row {
    const COLUMNS: &'static [Column];
    fn cells(self) -> Vec<Cell>;
}

/// Rows ready to be written, with the columns they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl ResultSet {
    pub fn of<R: Row>(rows: Vec<R>) -> ResultSet {
        ResultSet {
            columns: R::COLUMNS.to_vec(),
            rows: rows.into_iter().map(Row::cells).collect(),
        }
    }

    /// Text of one cell by column name.
    #[cfg(test)]
    pub fn text(&self, row: usize, column: &str) -> Option<String> {
        let i = self.columns.iter().position(|c| c.name == column)?;
        text_value(self.rows.get(row)?.get(i)?)
    }
}

/// Declares a row struct whose field order is the column order. Each field is
/// `name: Kind` or `name = "column": Kind` (for names that are Rust keywords).
/// Kinds: Text (String), OptText (Option<String>), Int4 and Int8 (i64), Numeric (u64),
/// Time (u64 µs since the epoch), Bytea (Option<Vec<u8>>).
macro_rules! row {
    ($(#[$m:meta])* pub struct $name:ident {
        $($field:ident $(= $col:literal)? : $kind:ident),* $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $(pub $field: $crate::admin::result::rust_ty!($kind),)*
        }
        impl $crate::admin::result::Row for $name {
            const COLUMNS: &'static [$crate::admin::result::Column] = &[$(
                $crate::admin::result::Column {
                    name: $crate::admin::result::col_name!($field $(, $col)?),
                    kind: $crate::admin::result::kind_of!($kind),
                },
            )*];
            fn cells(self) -> Vec<$crate::admin::result::Cell> {
                vec![$($crate::admin::result::cell!($kind, self.$field)),*]
            }
        }
    };
}

macro_rules! rust_ty {
    (Text) => { String };
    (OptText) => { Option<String> };
    (Int4) => { i64 };
    (Int8) => { i64 };
    (Numeric) => { u64 };
    (Time) => { u64 };
    (Bytea) => { Option<Vec<u8>> };
}

macro_rules! kind_of {
    (Text) => {
        $crate::admin::result::Kind::Text
    };
    (OptText) => {
        $crate::admin::result::Kind::Text
    };
    (Int4) => {
        $crate::admin::result::Kind::Int4
    };
    (Int8) => {
        $crate::admin::result::Kind::Int8
    };
    (Numeric) => {
        $crate::admin::result::Kind::Numeric
    };
    (Time) => {
        $crate::admin::result::Kind::Time
    };
    (Bytea) => {
        $crate::admin::result::Kind::Bytea
    };
}

macro_rules! cell {
    (Text, $v:expr) => {
        $crate::admin::result::Cell::Text($v)
    };
    (OptText, $v:expr) => {
        match $v {
            Some(s) => $crate::admin::result::Cell::Text(s),
            None => $crate::admin::result::Cell::Null,
        }
    };
    (Int4, $v:expr) => {
        $crate::admin::result::Cell::Int($v)
    };
    (Int8, $v:expr) => {
        $crate::admin::result::Cell::Int($v)
    };
    (Numeric, $v:expr) => {
        $crate::admin::result::Cell::UInt($v)
    };
    (Time, $v:expr) => {
        $crate::admin::result::Cell::Time($v)
    };
    (Bytea, $v:expr) => {
        match $v {
            Some(b) => $crate::admin::result::Cell::Bytes(b),
            None => $crate::admin::result::Cell::Null,
        }
    };
}

macro_rules! col_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $col:literal) => {
        $col
    };
}

pub(crate) use {cell, col_name, kind_of, row, rust_ty};

/// Format codes of a portal, resolved per column (Bind's rules: none = all text, one =
/// for all, else one per column). Err when the count matches neither.
pub fn resolve_formats(formats: &[i16], columns: usize) -> Result<Vec<bool>, String> {
    match formats.len() {
        0 => Ok(vec![false; columns]),
        1 => Ok(vec![formats[0] == 1; columns]),
        n if n == columns => Ok(formats.iter().map(|&f| f == 1).collect()),
        n => Err(format!(
            "bind message has {n} result formats but query has {columns} columns"
        )),
    }
}

/// RowDescription; `binary[i]` says whether column i will be sent in binary.
pub fn write_row_description(buf: &mut BytesMut, columns: &[Column], binary: &[bool]) {
    backend::message(buf, backend::tag::ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        for (i, c) in columns.iter().enumerate() {
            b.extend(c.name.bytes().filter(|&x| x != 0));
            b.put_u8(0);
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_u32(c.kind.oid());
            b.put_i16(c.kind.size());
            b.put_i32(-1); // type modifier
            b.put_i16(i16::from(binary.get(i).copied().unwrap_or(false)));
        }
    });
}

/// One DataRow.
pub fn write_data_row(buf: &mut BytesMut, columns: &[Column], cells: &[Cell], binary: &[bool]) {
    let values: Vec<Option<Vec<u8>>> = cells
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let kind = columns.get(i).map_or(Kind::Text, |c| c.kind);
            if binary.get(i).copied().unwrap_or(false) {
                binary_value(kind, cell)
            } else {
                text_value(cell).map(String::into_bytes)
            }
        })
        .collect();
    let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
    backend::data_row(buf, &refs);
}

/// Text format of a cell (None = NULL).
pub fn text_value(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Null => None,
        Cell::Text(s) => Some(s.clone()),
        Cell::Int(v) => Some(v.to_string()),
        Cell::UInt(v) => Some(v.to_string()),
        Cell::Time(0) => None,
        Cell::Time(t) => Some(format_timestamp(*t)),
        Cell::Bytes(b) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            Some(s)
        }
    }
}

/// Binary format of a cell for its column type.
fn binary_value(kind: Kind, cell: &Cell) -> Option<Vec<u8>> {
    let int = match cell {
        Cell::Int(v) => i128::from(*v),
        Cell::UInt(v) => i128::from(*v),
        Cell::Bytes(b) => return Some(b.clone()),
        other => return text_value(other).map(String::into_bytes),
    };
    Some(match kind {
        // Values beyond the type's range are clamped rather than wrapped into nonsense.
        Kind::Int4 => (int.clamp(i32::MIN.into(), i32::MAX.into()) as i32)
            .to_be_bytes()
            .to_vec(),
        Kind::Int8 => (int.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
            .to_be_bytes()
            .to_vec(),
        Kind::Numeric => numeric_binary(int),
        Kind::Text | Kind::Time | Kind::Bytea => int.to_string().into_bytes(),
    })
}

/// PostgreSQL's binary numeric: base-10000 digits, most significant first, with the
/// weight of the first digit; trailing zero digits are dropped as PostgreSQL does.
fn numeric_binary(v: i128) -> Vec<u8> {
    let negative = v < 0;
    let mut rest = v.unsigned_abs();
    let mut digits: Vec<i16> = Vec::new();
    while rest > 0 {
        digits.push((rest % 10_000) as i16);
        rest /= 10_000;
    }
    digits.reverse();
    let weight = digits.len().saturating_sub(1) as i16;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign: u16 = if negative { 0x4000 } else { 0 };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes()); // display scale
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// "YYYY-MM-DD HH:MM:SS UTC" for µs since the Unix epoch.
pub fn format_timestamp(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let days = (secs / 86_400) as i64;
    let tod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (eras of 400 years).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[path = "result_tests.rs"]
mod tests;
