//! The local RabbitMQ the end-to-end tests run against: a reachability check
//! that fails loudly, `rabbitmqctl` for vhosts and connections, and a reader
//! for the broker's view of a connection's client properties.
//!
//! It never installs or starts RabbitMQ (that is `ci/ensure-rabbitmq.sh`) and
//! never lets a test pass by skipping when the broker is absent.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::wait;

use serde_json::{Map, Value};

pub const RABBITMQ_HOST: &str = "127.0.0.1";
pub const RABBITMQ_PORT: u16 = 5672;

/// Panics unless RabbitMQ accepts TCP on 127.0.0.1:5672.
pub fn require_rabbitmq() {
    let addr = SocketAddr::from(([127, 0, 0, 1], RABBITMQ_PORT));
    if let Err(err) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        panic!(
            "RabbitMQ is not reachable at {addr} ({err}). These tests need a running broker \
             with the guest/guest user: run `ci/ensure-rabbitmq.sh` (or `rabbitmq-server -detached`)."
        );
    }
}

/// Runs `rabbitmqctl ARGS` and returns its stdout; panics with both output
/// streams if it cannot run or exits non-zero.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run `rabbitmqctl {}`: {err}", args.join(" ")));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        panic!(
            "`rabbitmqctl {}` failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
}

/// Creates a vhost and gives `guest` full permissions on it.
pub fn add_vhost(name: &str) {
    rabbitmqctl(&["add_vhost", name]);
    rabbitmqctl(&["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]);
}

pub fn delete_vhost(name: &str) {
    rabbitmqctl(&["delete_vhost", name]);
}

/// A vhost that exists for the lifetime of the value and is deleted (with its
/// queues) on drop, also when the test fails.
pub struct TempVhost {
    pub name: String,
}

impl TempVhost {
    pub fn create(name: &str) -> TempVhost {
        add_vhost(name);
        TempVhost {
            name: name.to_string(),
        }
    }
}

impl Drop for TempVhost {
    fn drop(&mut self) {
        let result = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "cleanup: `rabbitmqctl delete_vhost {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => eprintln!("cleanup: cannot run rabbitmqctl: {err}"),
        }
    }
}

/// One connection as the broker lists it.
#[derive(Clone, Debug)]
pub struct BrokerConnection {
    /// RabbitMQ's connection name, e.g. `127.0.0.1:40000 -> 127.0.0.1:5672`;
    /// this is what `close_connection` takes.
    pub name: String,
    pub peer_host: String,
    pub peer_port: u16,
    /// The client properties the broker received in StartOk, as a JSON object
    /// (nested tables are objects too).
    pub client_properties: Map<String, Value>,
}

impl BrokerConnection {
    /// A string-valued client property.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.client_properties.get(key).and_then(Value::as_str)
    }
}

/// All client connections of the broker, via
/// `rabbitmqctl list_connections name peer_host peer_port client_properties --formatter json`.
pub fn list_connections() -> Vec<BrokerConnection> {
    let stdout = rabbitmqctl(&[
        "list_connections",
        "name",
        "peer_host",
        "peer_port",
        "client_properties",
        "--formatter",
        "json",
        "--quiet",
    ]);
    parse_connections(&stdout)
}

/// Parses the JSON array printed by `list_connections --formatter json`.
pub fn parse_connections(json: &str) -> Vec<BrokerConnection> {
    let value: Value = serde_json::from_str(json.trim())
        .unwrap_or_else(|err| panic!("list_connections printed invalid JSON ({err}):\n{json}"));
    let rows = value
        .as_array()
        .unwrap_or_else(|| panic!("list_connections did not print an array:\n{json}"));
    rows.iter()
        .map(|row| BrokerConnection {
            name: row["name"].as_str().unwrap_or_default().to_string(),
            peer_host: address_text(&row["peer_host"]),
            peer_port: row["peer_port"].as_u64().unwrap_or_default() as u16,
            client_properties: table_to_object(&row["client_properties"]),
        })
        .collect()
}

/// The connection whose `connection_name` client property is `wanted`.
pub fn find_connection(wanted: &str) -> Option<BrokerConnection> {
    list_connections()
        .into_iter()
        .find(|connection| connection.property("connection_name") == Some(wanted))
}

/// Polls [`find_connection`] until the broker lists the connection (it shows
/// up shortly after `Connection.OpenOk`); panics after `limit`.
pub fn wait_for_connection(wanted: &str, limit: Duration) -> BrokerConnection {
    let found = wait::poll_until_every(wait::deadline_in(limit), RABBITMQCTL_PACE, || {
        find_connection(wanted)
    });
    found.unwrap_or_else(|| {
        let names: Vec<String> = list_connections()
            .into_iter()
            .map(|c| format!("{} {:?}", c.name, c.property("connection_name")))
            .collect();
        panic!(
            "RabbitMQ lists no connection with connection_name {wanted:?} after {limit:?}; it lists {names:#?}"
        );
    })
}

/// The pause between two `rabbitmqctl` polls: each call starts an Erlang
/// VM (about a second of CPU), so polling back to back would load the
/// machine the tests run on.
pub const RABBITMQCTL_PACE: Duration = Duration::from_millis(250);

/// The Erlang pid of the connection RabbitMQ calls `name`, which is what
/// `close_connection` takes (RabbitMQ 3.10 does not accept the name). The
/// JSON formatter prints pids without their node, so this reads the table
/// formatter's tab-separated `pid name` lines instead.
pub fn connection_pid(name: &str) -> String {
    let stdout = rabbitmqctl(&["list_connections", "pid", "name", "--silent"]);
    stdout
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, listed)| listed.trim() == name)
        .map(|(pid, _)| pid.trim().to_string())
        .unwrap_or_else(|| panic!("RabbitMQ lists no connection named {name:?}:\n{stdout}"))
}

/// Closes a connection from the broker side with `reason`, as an operator
/// would: `rabbitmqctl close_connection <pid> <reason>`.
pub fn close_connection(connection: &BrokerConnection, reason: &str) {
    let pid = connection_pid(&connection.name);
    rabbitmqctl(&["close_connection", &pid, reason]);
}

/// RabbitMQ prints a field table either as a JSON object or, in older
/// formatters, as a list of `[key, type, value]` triples; both become an
/// object here, recursively for nested tables.
fn table_to_object(table: &Value) -> Map<String, Value> {
    match table {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| (key.clone(), nested(value)))
            .collect(),
        Value::Array(entries) => entries
            .iter()
            .filter_map(|entry| match entry.as_array().map(Vec::as_slice) {
                Some([Value::String(key), Value::String(kind), value]) => {
                    let value = if kind == "table" {
                        Value::Object(table_to_object(value))
                    } else {
                        value.clone()
                    };
                    Some((key.clone(), value))
                }
                _ => None,
            })
            .collect(),
        _ => Map::new(),
    }
}

/// RabbitMQ prints an IPv4 peer as `[127,0,0,1]` (an Erlang tuple); a
/// string is kept as it is.
fn address_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|part| part.to_string())
            .collect::<Vec<_>>()
            .join("."),
        _ => String::new(),
    }
}

fn nested(value: &Value) -> Value {
    match value {
        Value::Object(_) => Value::Object(table_to_object(value)),
        other => other.clone(),
    }
}
