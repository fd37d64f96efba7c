//! Mainstream drivers' own prepared statements through transaction pooling: psycopg 3, asyncpg, tokio-postgres, pgjdbc, node-postgres; 20 clients over pool_size 2.

mod common;
use common::*;

const CLIENTS: usize = 20;
const ROUNDS: usize = 30;

/// A pooler (transaction mode, pool_size 2) for a fresh database with a table `items`.
fn start(db: &str) -> Pooler {
    let pg = Postgres::shared();
    pg.create_database(db);
    pg.psql(
        db,
        "DROP TABLE IF EXISTS items; CREATE TABLE items (client int, n int); \
         GRANT ALL ON items TO PUBLIC",
    );
    Pooler::start(
        &TRUST_TRANSACTION_CONFIG.replace("default_pool_size = 5", "default_pool_size = 2"),
    )
}

/// Runs a driver script and checks its summary line "queries=N errors=M": no error, every
/// query answered right, named statements really used, and every client's inserts there.
fn check(
    name: &str,
    db: &str,
    driver: Result<Driver, String>,
    file: &str,
    source: &str,
    per_round: usize,
) {
    let driver = match driver {
        Ok(d) => d,
        Err(why) => return skip(name, &why),
    };
    // Scripts that take a mode get one run per mode (after "MODES:" on their first line).
    let modes: Vec<String> = match source.lines().next().and_then(|l| l.split_once("MODES:")) {
        Some((_, m)) => m.split_whitespace().map(String::from).collect(),
        None => vec![String::new()],
    };
    for mode in modes {
        // A pooler of its own per run: its counters then show what this run did.
        let pooler = start(db);
        let target = match file.ends_with(".java") {
            true => format!(
                "jdbc:postgresql://127.0.0.1:{}/{db}?user={TRUST_USER}",
                pooler.port
            ),
            false => format!("postgresql://{TRUST_USER}@127.0.0.1:{}/{db}", pooler.port),
        };
        let args = [
            target,
            CLIENTS.to_string(),
            ROUNDS.to_string(),
            mode.clone(),
        ];
        let out = driver
            .run(file, source, &args)
            .unwrap_or_else(|e| panic!("{name} {mode}: {e}"));
        let summary = out
            .lines()
            .find(|l| l.starts_with("queries="))
            .unwrap_or_else(|| panic!("{name} {mode}: no summary line in\n{out}"));
        assert_eq!(
            summary,
            format!("queries={} errors=0", CLIENTS * ROUNDS * per_round),
            "{name} {mode}:\n{out}"
        );
        let server_parses = admin_number(
            &pooler,
            "SHOW STATS",
            "database",
            db,
            "total_server_parse_count",
        );
        assert!(
            server_parses > 0,
            "{name} {mode}: no named statement reached a server"
        );
        let clients = Postgres::shared().psql(db, "SELECT count(DISTINCT client) FROM items");
        assert_eq!(
            clients,
            CLIENTS.to_string(),
            "{name} {mode}: clients that inserted"
        );
    }
}

const PSYCOPG: &str = r#"# MODES: 0 default
import sys, threading, psycopg
dsn, clients, rounds, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
kw = {} if mode == "default" else {"prepare_threshold": int(mode)}
errors, done, lock = [], [0], threading.Lock()

def work(i):
    try:
        with psycopg.connect(dsn, autocommit=True, **kw) as conn:
            n = 0
            for r in range(rounds):
                v = conn.execute("SELECT %s::int + %s::int", (r, i)).fetchone()[0]
                assert v == r + i, v
                v = conn.execute(f"SELECT %s::int * {i + 1} AS c{i}", (r,)).fetchone()[0]
                assert v == r * (i + 1), v
                with conn.transaction():
                    v = conn.execute("SELECT %s::text || '/' || %s::text", (str(i), str(r))).fetchone()[0]
                    assert v == f"{i}/{r}", v
                    v = conn.execute("SELECT count(*) FROM generate_series(1, %s::int)", (r + 1,)).fetchone()[0]
                    assert v == r + 1, v
                n += 4
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO items VALUES (%s, %s)", [(i, k) for k in range(10)])
            with lock:
                done[0] += n
    except Exception as e:
        with lock:
            errors.append(f"client {i}: {type(e).__name__}: {e}")

threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print(f"queries={done[0]} errors={len(errors)}")
for e in errors[:20]: print(e)
"#;

const ASYNCPG: &str = r#"# MODES: cache prepare
import asyncio, sys, asyncpg
dsn, clients, rounds, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

async def cached(conn, i):
    n = 0
    for r in range(rounds):
        assert await conn.fetchval("SELECT $1::int + $2::int", r, i) == r + i
        assert await conn.fetchval(f"SELECT $1::int * {i + 1}", r) == r * (i + 1)
        async with conn.transaction():
            v = await conn.fetchval("SELECT $1::text || '/' || $2::text", str(i), str(r))
            assert v == f"{i}/{r}", v
            rows = await conn.fetch("SELECT g FROM generate_series(1, $1::int) g", r + 1)
            assert len(rows) == r + 1
        n += 4
    return n

async def prepared(conn, i):
    same = await conn.prepare("SELECT $1::int + $2::int")
    own = await conn.prepare(f"SELECT $1::int * {i + 1}")
    n = 0
    for r in range(rounds):
        async with conn.transaction():
            assert await same.fetchval(r, i) == r + i
            assert await own.fetchval(r) == r * (i + 1)
        assert await same.fetchval(r, 1) == r + 1
        assert await own.fetchval(r + 1) == (r + 1) * (i + 1)
        n += 4
    return n

async def client(i):
    conn = await asyncpg.connect(dsn)
    try:
        n = await (cached if mode == "cache" else prepared)(conn, i)
        await conn.executemany("INSERT INTO items VALUES ($1, $2)", [(i, k) for k in range(10)])
        return n
    finally:
        await conn.close()

async def main():
    results = await asyncio.gather(*(client(i) for i in range(clients)), return_exceptions=True)
    errors = [f"client {i}: {type(r).__name__}: {r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    print(f"queries={sum(r for r in results if isinstance(r, int))} errors={len(errors)}")
    for e in errors[:20]: print(e)

asyncio.run(main())
"#;

const NODE: &str = r#"// node-postgres named queries ({name, text, values})
const { Client } = require('pg');
const [dsn, clients, rounds] = [process.argv[2], +process.argv[3], +process.argv[4]];

async function work(i) {
  const c = new Client({ connectionString: dsn });
  await c.connect();
  let n = 0;
  try {
    const one = async (q, want) => {
      const res = await c.query(q);
      if (String(res.rows[0].v) !== String(want)) throw new Error(`${q.name}: ${res.rows[0].v} != ${want}`);
      n += 1;
    };
    for (let r = 0; r < rounds; r++) {
      await one({ name: 'same', text: 'SELECT $1::int + $2::int AS v', values: [r, i] }, r + i);
      await one({ name: 'own', text: `SELECT $1::int * ${i + 1} AS v`, values: [r] }, r * (i + 1));
      await c.query('BEGIN');
      await one({ name: 'txn', text: "SELECT $1::text || '/' || $2::text AS v", values: [String(i), String(r)] }, `${i}/${r}`);
      await c.query({ name: 'ins', text: 'INSERT INTO items VALUES ($1, $2)', values: [i, r] });
      await c.query('COMMIT');
    }
  } finally {
    await c.end();
  }
  return n;
}

Promise.allSettled([...Array(clients).keys()].map(work)).then((results) => {
  const errors = results.filter((r) => r.status === 'rejected').map((r) => String(r.reason));
  const done = results.filter((r) => r.status === 'fulfilled').reduce((a, r) => a + r.value, 0);
  console.log(`queries=${done} errors=${errors.length}`);
  errors.slice(0, 20).forEach((e) => console.log(e));
});
"#;

const JDBC: &str = r#"// MODES: 5 1
import java.sql.*;
import java.util.*;
import java.util.concurrent.atomic.AtomicLong;

public class Prepared {
    public static void main(String[] a) throws Exception {
        String url = a[0] + "&prepareThreshold=" + a[3];
        int clients = Integer.parseInt(a[1]), rounds = Integer.parseInt(a[2]);
        AtomicLong done = new AtomicLong();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < clients; i++) {
            final int id = i;
            Thread t = new Thread(() -> {
                try (Connection c = DriverManager.getConnection(url)) {
                    PreparedStatement same = c.prepareStatement("SELECT ?::int + ?::int");
                    PreparedStatement own = c.prepareStatement("SELECT ?::int * " + (id + 1));
                    for (int r = 0; r < rounds; r++) {
                        c.setAutoCommit(r % 2 == 0);
                        same.setInt(1, r);
                        same.setInt(2, id);
                        expect(same, r + id);
                        own.setInt(1, r);
                        expect(own, r * (id + 1));
                        if (!c.getAutoCommit()) c.commit();
                        done.addAndGet(2);
                    }
                    c.setAutoCommit(false);
                    PreparedStatement ins = c.prepareStatement("INSERT INTO items VALUES (?, ?)");
                    for (int b = 0; b < 6; b++) {
                        for (int k = 0; k < 5; k++) {
                            ins.setInt(1, id);
                            ins.setInt(2, b * 5 + k);
                            ins.addBatch();
                        }
                        int[] counts = ins.executeBatch();
                        c.commit();
                        if (counts.length != 5) throw new IllegalStateException("batch " + counts.length);
                    }
                } catch (Throwable e) {
                    errors.add("client " + id + ": " + e);
                }
            });
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join();
        System.out.println("queries=" + done.get() + " errors=" + errors.size());
        errors.stream().limit(20).forEach(System.out::println);
    }

    static void expect(PreparedStatement s, int want) throws SQLException {
        try (ResultSet rs = s.executeQuery()) {
            if (!rs.next() || rs.getInt(1) != want) throw new IllegalStateException("wanted " + want);
        }
    }
}
"#;

#[test]
fn psycopg3_prepare_threshold_0_and_default() {
    check(
        "psycopg3",
        "prep_drv_psycopg",
        psycopg(),
        "scenario.py",
        PSYCOPG,
        4,
    );
}

#[test]
fn asyncpg_statement_cache_and_explicit_prepare() {
    check(
        "asyncpg",
        "prep_drv_asyncpg",
        asyncpg(),
        "scenario.py",
        ASYNCPG,
        4,
    );
}

#[test]
fn node_postgres_named_queries() {
    check(
        "node-postgres",
        "prep_drv_node",
        node_pg(),
        "scenario.js",
        NODE,
        3,
    );
}

#[test]
fn pgjdbc_prepare_threshold_5_and_1_with_batches() {
    check(
        "pgjdbc",
        "prep_drv_jdbc",
        pgjdbc(),
        "Prepared.java",
        JDBC,
        2,
    );
}

/// tokio-postgres: statements prepared once per client, reused across many transactions,
/// and `query(&str)`, which prepares and closes a statement each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepare_reused_across_transactions() {
    const DB: &str = "prep_drv_tokio";
    let pooler = tokio::task::spawn_blocking(|| start(DB)).await.unwrap();
    let connstr = pooler.connstr(TRUST_USER, DB);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS as i32 {
        let mut client = pg_connect(&connstr).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let same = client.prepare("SELECT $1::int4 + $2::int4").await?;
            let own = client
                .prepare(&format!("SELECT $1::int4 * {}", i + 1))
                .await?;
            for r in 0..ROUNDS as i32 {
                let tx = client.transaction().await?;
                assert_eq!(
                    tx.query_one(&same, &[&r, &i]).await?.get::<_, i32>(0),
                    r + i
                );
                assert_eq!(
                    tx.query_one(&own, &[&r]).await?.get::<_, i32>(0),
                    r * (i + 1)
                );
                tx.execute("INSERT INTO items VALUES ($1, $2)", &[&i, &r])
                    .await?;
                tx.commit().await?;
                assert_eq!(
                    client.query_one(&same, &[&r, &1]).await?.get::<_, i32>(0),
                    r + 1
                );
                let text = client
                    .query_one("SELECT $1::text || '!'", &[&r.to_string()])
                    .await?;
                assert_eq!(text.get::<_, String>(0), format!("{r}!"));
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    let mut errors = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Err(e) = t.await.expect("client task") {
            errors.push(format!("client {i}: {e:?}"));
        }
    }
    assert!(
        errors.is_empty(),
        "{} errors:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let pooler = tokio::task::spawn_blocking(move || {
        let parses = admin_number(
            &pooler,
            "SHOW STATS",
            "database",
            DB,
            "total_server_parse_count",
        );
        assert!(parses >= 2, "server parses {parses}");
        pooler
    })
    .await
    .unwrap();
    let count = Postgres::shared().psql(DB, "SELECT count(*) FROM items");
    assert_eq!(count, (CLIENTS * ROUNDS).to_string());
    drop(pooler);
}

/// What psycopg 3 sends at the end of a pipeline (executemany uses one): Sync, then Flush.
/// The client is idle after that Sync: its server must not stay linked to it, and its
/// leaving must not cancel anything (a cancel landing late hits the server's next client).
#[test]
fn psycopg_pipeline_end_sync_then_flush() {
    const DB: &str = "prep_drv_flush";
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(
        &TRUST_TRANSACTION_CONFIG.replace("default_pool_size = 5", "default_pool_size = 1"),
    );
    let pipeline = [
        fe::parse("", "SELECT 1", &[]),
        fe::bind("", "", &[]),
        fe::execute("", 0),
        fe::sync(),
        fe::flush(),
    ]
    .concat();
    for round in 0..5 {
        let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
        let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
        a.send(&pipeline);
        a.recv_until_ready();
        b.send(&fe::query("SELECT pg_sleep(0.3)"));
        a.send(&fe::terminate());
        drop(a);
        let reply = b.recv_until_ready();
        assert!(
            !reply.iter().any(Msg::is_error),
            "round {round}: the next client's query was hit by a cancel: {reply:?}"
        );
    }
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    a.send(&pipeline);
    a.recv_until_ready();
    b.send(&fe::query("SELECT 'b'"));
    let first = b.try_recv(std::time::Duration::from_secs(3));
    assert!(
        matches!(first, Ok(Some(_))),
        "B waits while A is idle after its Sync (A's Flush kept the server): {first:?}"
    );
    b.recv_until_ready();
}
