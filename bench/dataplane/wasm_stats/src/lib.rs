//! Bench-only proxy-wasm HTTP filter: Istio's metadata exchange and standard HTTP metrics in one Wasm filter.
//!
//! A stand-in for what the sidecar does today with stock filters (header_mutation, header_to_metadata /
//! set_filter_state) and Envoy's stats access logger, to count what a Wasm filter costs per request
//! (bench/dataplane/wasm_variant.py). Per request, on the side it runs:
//! - client (`reporter=source`): adds our x-envoy-peer-metadata / -id to the request; reads the server's
//!   x-envoy-peer-metadata off the response and removes both of its headers;
//! - server (`reporter=destination`): reads the client's x-envoy-peer-metadata off the request and removes both
//!   of its headers; adds ours to the response;
//! - at the end of the stream (on_log): one key with the same raw label inputs as the stats logger's `k` tag
//!   (reporter, services, the peer's metadata kept opaque, upstream cluster, :authority, content type, response
//!   code, gRPC status, response flags, both URI SANs, the gRPC message counts), and a requests counter plus
//!   three histograms (duration ms, request bytes, response bytes) named by it: defined once per key (ids kept
//!   in the VM), then incremented / recorded by id.
//!
//! `mode=noop` in the configuration makes every callback return at once: V8's fixed cost per request;
//! `work=lean` takes fewer host properties for the same key, `work=headers` keeps no stats (diagnostics).

use hashbrown::HashMap; // foldhash: cheaper than std's SipHash over a ~600-byte key
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::cell::RefCell;
use std::rc::Rc;

const PEER_MD: &str = "x-envoy-peer-metadata";
const PEER_ID: &str = "x-envoy-peer-metadata-id";
const SEP: char = ';';
const CONTENT_TYPE_CHARS: usize = 16; // len("application/grpc"), as the stats logger's key
const PREFIX: &str = "sailmesh_wasm";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Client,
    Server,
    Noop,
}

/// How much of the per-request work the filter does (diagnostics: where a Wasm filter's cost goes).
#[derive(Clone, Copy, PartialEq)]
enum Work {
    /// every label input from a host property, as Envoy's attributes name them
    Full,
    /// the same key with fewer host properties: the response code from `:status`, the duration from the VM's
    /// clock, our own URI SAN from the configuration, the gRPC message counts only for gRPC requests
    Lean,
    /// the metadata exchange only: no stats, no header read for the key
    Headers,
}

struct Settings {
    mode: Mode,
    work: Work,
    local_san: String,
    reporter: String,
    services: String,
    metadata: String,
    id: String,
}

/// Metric ids of one key: requests counter, duration, request bytes, response bytes.
type Ids = [u32; 4];

struct Shared {
    settings: Settings,
    metrics: RefCell<HashMap<String, Ids>>,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { shared: None }) });
}}

struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

fn parse(config: &str) -> Settings {
    let mut s = Settings {
        mode: Mode::Noop,
        work: Work::Full,
        local_san: String::new(),
        reporter: String::new(),
        services: String::new(),
        metadata: String::new(),
        id: String::new(),
    };
    for line in config.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "mode" => {
                s.mode = match v {
                    "client" => Mode::Client,
                    "server" => Mode::Server,
                    _ => Mode::Noop,
                }
            }
            "work" => {
                s.work = match v {
                    "lean" => Work::Lean,
                    "headers" => Work::Headers,
                    _ => Work::Full,
                }
            }
            "local_san" => s.local_san = v.to_string(),
            "reporter" => s.reporter = v.to_string(),
            "services" => s.services = v.to_string(),
            "metadata" => s.metadata = v.to_string(),
            "id" => s.id = v.to_string(),
            _ => {}
        }
    }
    s
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let settings = parse(&String::from_utf8_lossy(&raw));
        self.shared = Some(Rc::new(Shared {
            settings,
            metrics: RefCell::new(HashMap::new()),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        if shared.settings.mode == Mode::Noop {
            return Some(Box::new(Noop));
        }
        Some(Box::new(Stream {
            shared,
            peer: None,
            authority: None,
            content_type: None,
            grpc_status: None,
            status: None,
            start_ns: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}

struct Stream {
    shared: Rc<Shared>,
    peer: Option<String>,
    authority: Option<String>,
    content_type: Option<String>,
    grpc_status: Option<String>,
    status: Option<String>,
    start_ns: u64,
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

fn int_property(ctx: &dyn Context, path: Vec<&str>) -> Option<i64> {
    let b = ctx.get_property(path)?;
    let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(arr))
}

fn str_property(ctx: &dyn Context, path: Vec<&str>) -> String {
    ctx.get_property(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

impl Stream {
    fn key(&self) -> String {
        let s = &self.shared.settings;
        let client = s.mode == Mode::Client;
        let side = if client { "upstream" } else { "connection" };
        let cluster = if client {
            str_property(self, vec!["xds", "cluster_name"])
        } else {
            String::new()
        };
        let lean = s.work == Work::Lean;
        let code = match (lean, &self.status) {
            (true, Some(status)) => status.clone(),
            _ => int_property(self, vec!["response", "code"])
                .unwrap_or(0)
                .to_string(),
        };
        let flags = int_property(self, vec!["response", "flags"]).unwrap_or(0);
        let peer_san = str_property(self, vec![side, "uri_san_peer_certificate"]);
        let local_san = if lean {
            s.local_san.clone()
        } else {
            str_property(self, vec![side, "uri_san_local_certificate"])
        };
        let grpc = self
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/grpc"));
        let messages = if lean && !grpc {
            String::new()
        } else {
            str_property(self, vec!["filter_state", "envoy.filters.http.grpc_stats"])
        };
        let fields: [&str; 12] = [
            &s.reporter,
            &s.services,
            self.peer.as_deref().unwrap_or(""),
            &cluster,
            self.authority.as_deref().unwrap_or(""),
            self.content_type.as_deref().unwrap_or(""),
            &code,
            self.grpc_status.as_deref().unwrap_or(""),
            &flags.to_string(),
            &peer_san,
            &local_san,
            &messages,
        ];
        let mut key = String::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                key.push(SEP);
            }
            key.push_str(f);
        }
        key
    }

    fn ids(&self, key: String) -> Option<Ids> {
        if let Some(ids) = self.shared.metrics.borrow().get(&key) {
            return Some(*ids);
        }
        let define = |t: MetricType, name: &str| {
            hostcalls::define_metric(t, &format!("{PREFIX}.{name};{key}")).ok()
        };
        let ids = [
            define(MetricType::Counter, "requests_total")?,
            define(MetricType::Histogram, "request_duration_milliseconds")?,
            define(MetricType::Histogram, "request_bytes")?,
            define(MetricType::Histogram, "response_bytes")?,
        ];
        self.shared.metrics.borrow_mut().insert(key, ids);
        Some(ids)
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let s = &self.shared.settings;
        if s.work == Work::Lean {
            self.start_ns = now_ns();
        }
        if s.mode == Mode::Client {
            self.set_http_request_header(PEER_MD, Some(&s.metadata)); // OVERWRITE_IF_EXISTS_OR_ADD, as today
            self.set_http_request_header(PEER_ID, Some(&s.id));
        } else {
            self.peer = self.get_http_request_header(PEER_MD);
            self.set_http_request_header(PEER_MD, None);
            self.set_http_request_header(PEER_ID, None);
        }
        if s.work == Work::Headers {
            return Action::Continue;
        }
        if s.mode == Mode::Client {
            self.authority = self.get_http_request_header(":authority");
        }
        self.content_type = self.get_http_request_header("content-type").map(|mut c| {
            c.truncate(
                c.char_indices()
                    .nth(CONTENT_TYPE_CHARS)
                    .map_or(c.len(), |(i, _)| i),
            );
            c
        });
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let s = &self.shared.settings;
        if s.mode == Mode::Client {
            self.peer = self.get_http_response_header(PEER_MD);
            self.set_http_response_header(PEER_MD, None);
            self.set_http_response_header(PEER_ID, None);
        } else {
            self.set_http_response_header(PEER_MD, Some(&s.metadata));
            self.set_http_response_header(PEER_ID, Some(&s.id));
        }
        if s.work == Work::Headers {
            return Action::Continue;
        }
        self.grpc_status = self.get_http_response_header("grpc-status");
        if s.work == Work::Lean {
            self.status = self.get_http_response_header(":status");
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        if self.shared.settings.work == Work::Headers {
            return Action::Continue;
        }
        if let Some(g) = self.get_http_response_trailer("grpc-status") {
            self.grpc_status = Some(g);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let work = self.shared.settings.work;
        if work == Work::Headers {
            return;
        }
        let duration_ns = if work == Work::Lean {
            now_ns().saturating_sub(self.start_ns) as i64
        } else {
            int_property(self, vec!["request", "duration"]).unwrap_or(0)
        };
        let req_bytes = int_property(self, vec!["request", "total_size"]).unwrap_or(0);
        let resp_bytes = int_property(self, vec!["response", "total_size"]).unwrap_or(0);
        let key = self.key();
        if let Some([count, duration, req, resp]) = self.ids(key) {
            let _ = hostcalls::increment_metric(count, 1);
            let _ = hostcalls::record_metric(duration, (duration_ns.max(0) / 1_000_000) as u64);
            let _ = hostcalls::record_metric(req, req_bytes.max(0) as u64);
            let _ = hostcalls::record_metric(resp, resp_bytes.max(0) as u64);
        }
    }
}
