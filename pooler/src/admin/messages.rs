//! Extended-protocol messages of the console: the bodies of Parse, Bind, Describe/Close and
//! Execute, and the replies only a server sends to them. Malformed bodies are errors (the
//! session answers FATAL 08P01), never panics.

use bytes::{BufMut, BytesMut};

use crate::proto::{backend, read_cstr, read_i32};

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn bad(&self) -> String {
        format!("malformed {} message", self.what)
    }

    fn cstr(&mut self) -> Result<String, String> {
        read_cstr(self.buf, &mut self.pos)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| self.bad())
    }

    fn i16(&mut self) -> Result<i16, String> {
        let b = self
            .buf
            .get(self.pos..self.pos + 2)
            .ok_or_else(|| self.bad())?;
        self.pos += 2;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        read_i32(self.buf, &mut self.pos).ok_or_else(|| self.bad())
    }

    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.bad())?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.buf.len() - self.pos < n {
            return Err(self.bad());
        }
        self.pos += n;
        Ok(())
    }

    /// A count that must not be negative.
    fn count(&mut self) -> Result<usize, String> {
        usize::try_from(self.i16()?).map_err(|_| self.bad())
    }

    fn end(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.bad())
        }
    }
}

pub struct ParseMsg {
    pub name: String,
    pub query: String,
    pub param_types: Vec<u32>,
}

pub fn parse_message(body: &[u8]) -> Result<ParseMsg, String> {
    let mut r = Reader::new(body, "Parse");
    let name = r.cstr()?;
    let query = r.cstr()?;
    let n = r.count()?;
    let mut param_types = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        param_types.push(r.i32()? as u32);
    }
    r.end()?;
    Ok(ParseMsg {
        name,
        query,
        param_types,
    })
}

pub struct BindMsg {
    pub portal: String,
    pub statement: String,
    pub result_formats: Vec<i16>,
}

/// Bind; parameter values are read past (no console command takes parameters).
pub fn bind_message(body: &[u8]) -> Result<BindMsg, String> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let nformats = r.count()?;
    r.skip(2 * nformats)?;
    let nparams = r.count()?;
    for _ in 0..nparams {
        let len = r.i32()?;
        if len > 0 {
            r.skip(len as usize)?;
        }
    }
    let nresults = r.count()?;
    let mut result_formats = Vec::with_capacity(nresults.min(64));
    for _ in 0..nresults {
        result_formats.push(r.i16()?);
    }
    r.end()?;
    Ok(BindMsg {
        portal,
        statement,
        result_formats,
    })
}

/// Describe and Close: 'S' or 'P', and a name.
pub fn target_message(body: &[u8]) -> Result<(u8, String), String> {
    let mut r = Reader::new(body, "Describe/Close");
    let kind = r.u8()?;
    let name = r.cstr()?;
    r.end()?;
    Ok((kind, name))
}

/// Execute: portal name and max_rows.
pub fn execute_message(body: &[u8]) -> Result<(String, i32), String> {
    let mut r = Reader::new(body, "Execute");
    let name = r.cstr()?;
    let max_rows = r.i32()?;
    r.end()?;
    Ok((name, max_rows))
}

pub fn parse_complete(buf: &mut BytesMut) {
    backend::message(buf, backend::tag::PARSE_COMPLETE, |_| {});
}

pub fn bind_complete(buf: &mut BytesMut) {
    backend::message(buf, backend::tag::BIND_COMPLETE, |_| {});
}

pub fn close_complete(buf: &mut BytesMut) {
    backend::message(buf, backend::tag::CLOSE_COMPLETE, |_| {});
}

pub fn no_data(buf: &mut BytesMut) {
    backend::message(buf, backend::tag::NO_DATA, |_| {});
}

/// ParameterDescription: the declared types, unspecified ones (0) reported as text.
pub fn parameter_description(buf: &mut BytesMut, types: &[u32]) {
    backend::message(buf, backend::tag::PARAMETER_DESCRIPTION, |b| {
        b.put_i16(types.len() as i16);
        for &t in types {
            b.put_u32(if t == 0 { super::result::TEXT_OID } else { t });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(v: &mut Vec<u8>, s: &str) {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }

    #[test]
    fn parse_and_bind_bodies() {
        let mut p = Vec::new();
        cstr(&mut p, "s1");
        cstr(&mut p, "SHOW POOLS");
        p.extend_from_slice(&1i16.to_be_bytes());
        p.extend_from_slice(&25u32.to_be_bytes());
        let m = parse_message(&p).unwrap();
        assert_eq!((m.name.as_str(), m.query.as_str()), ("s1", "SHOW POOLS"));
        assert_eq!(m.param_types, [25]);

        let mut b = Vec::new();
        cstr(&mut b, "");
        cstr(&mut b, "s1");
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        let m = bind_message(&b).unwrap();
        assert_eq!(m.statement, "s1");
        assert_eq!(m.result_formats, [1]);
        // Every truncation is an error, never a panic.
        for cut in 0..b.len() {
            assert!(bind_message(&b[..cut]).is_err(), "cut at {cut}");
        }
        for cut in 0..p.len() {
            assert!(parse_message(&p[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn negative_counts_are_errors() {
        let mut b = Vec::new();
        cstr(&mut b, "");
        cstr(&mut b, "");
        b.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(bind_message(&b).is_err());
        assert!(target_message(b"X").is_err());
        assert_eq!(target_message(b"Pname\0"), Ok((b'P', "name".to_string())));
        assert!(execute_message(b"p\0\0\0").is_err());
    }
}
