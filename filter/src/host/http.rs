//! One HTTP stream: strip spoofable identity headers, find the key, and let
//! [`request_path`] say what happens: an answer from the deny cache, a lease or the
//! invalid-key budget, or the one callout, whose answer it turns into an action this stream
//! carries out.

use std::rc::Rc;

use log::Level;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action as HostAction, MapType};
use tollgate_protocol::header::EDGE_DENIED;
use tollgate_protocol::{Answer, DECISION_PATH, DecisionRequest};

use super::{HostSharedData, Worker, now_ms, send_reply};
use crate::budget_refusals::{BudgetRefusals, Subject};
use crate::config::Settings;
use crate::deny_cache::Fingerprint;
use crate::outcome::{self, Action, CalloutFailure, Headers, LocalReply, RESERVED_HEADERS, Stat};
use crate::request_path::{self, Before, Pending};
use crate::routes;
use tollgate_protocol::api_key_extraction;
use tollgate_protocol::trace_context;

/// The client's request headers, fetched with one host call: reading the path, the key
/// headers and the reserved headers one by one would cost one call each. Values stay bytes
/// (a client may send any); names are decoded by the SDK, which would panic on a name that is
/// not UTF-8, but Envoy's codecs refuse such a request before any filter runs (an end-to-end
/// test sends one).
struct RequestHeaders(Vec<(String, Vec<u8>)>);

impl RequestHeaders {
    fn fetch(worker: &Worker) -> Option<Self> {
        match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => Some(Self(headers)),
            Err(status) => {
                worker.log(
                    Level::Error,
                    "cannot read the request headers",
                    format_args!("{status:?}"),
                );
                None
            }
        }
    }

    /// The first value of a header, as raw bytes (a client may send bytes that are not
    /// UTF-8). Names arrive lower-case from Envoy.
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The configured key header and, when bearer keys are on, `Authorization`.
    fn key_headers(&self, settings: &Settings) -> (Option<&[u8]>, Option<&[u8]>) {
        let authorization = settings.bearer.then(|| self.get("authorization")).flatten();
        (self.get(&settings.key_header), authorization)
    }

    /// The reserved headers the client sent (almost always none).
    fn reserved(&self) -> Vec<&'static str> {
        RESERVED_HEADERS
            .into_iter()
            .filter(|name| self.get(name).is_some())
            .collect()
    }
}

pub(super) struct RequestContext {
    /// The host's id of this stream, by which a held reply finds it again.
    context_id: u32,
    /// Whether a reply to this stream is held (see [`crate::held_replies`]).
    held: bool,
    settings: Rc<Settings>,
    worker: Rc<Worker>,
    /// Reserved headers the client sent, removed before the request goes upstream.
    reserved: Vec<&'static str>,
    /// On a limited route, whether the key came from `Authorization` (else from the key
    /// header): which headers to remove before the request goes upstream
    /// ([`Settings::key_headers_to_remove`]). `None` off limited routes, where the key is the
    /// control-plane's to read (usage, billing).
    key_from_authorization: Option<bool>,
    /// What the tables need when this request's decision arrives (see [`request_path`]);
    /// `None` until a callout is made.
    pending: Option<Pending>,
    /// Rate-limit headers for the response of an admitted request, set when the decision
    /// arrives and written in the response phase.
    response_headers: Headers,
    /// On a limited route, the index of its own stats (see `Stats::route`), so the answer
    /// of a callout is counted for the route too.
    route_stats: Option<usize>,
    /// On a route of `budget_refusals`, who sent the request, so a budget refusal in its
    /// answer is remembered for them.
    budget_subject: Option<Subject>,
}

impl RequestContext {
    pub(super) fn new(context_id: u32, settings: Rc<Settings>, worker: Rc<Worker>) -> Self {
        Self {
            context_id,
            held: false,
            settings,
            worker,
            reserved: Vec::new(),
            key_from_authorization: None,
            pending: None,
            response_headers: Vec::new(),
            route_stats: None,
            budget_subject: None,
        }
    }

    /// Sends the callout. `Err` carries the failure when Envoy refused to dispatch it (for
    /// instance an unknown cluster), in which case no response callback will follow.
    /// `trace` holds the client request's tracing headers that may ride along (see
    /// [`trace_context`]).
    fn dispatch(
        &self,
        request: &DecisionRequest<'_>,
        trace: &[(&'static str, &str)],
    ) -> Result<(), CalloutFailure> {
        let protocol_headers = request.headers();
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", DECISION_PATH),
            (":authority", &self.settings.authority),
        ];
        headers.extend(protocol_headers.iter().map(|(n, v)| (*n, v.as_ref())));
        headers.extend(trace.iter().copied());
        hostcalls::dispatch_http_call(
            &self.settings.cluster,
            headers,
            None,
            Vec::new(),
            self.settings.timeout,
        )
        .map(|_token| ())
        .map_err(|status| CalloutFailure::Host(format!("{status:?}")))
    }

    /// Carries out an action. Returns whether the stream may continue now; `false` means a
    /// local reply was sent (or the stream is stuck and Envoy's timeouts take over).
    fn apply(&mut self, action: Action) -> bool {
        match action {
            Action::Resume { upstream, response } => {
                if !self.strip_for_upstream() {
                    return false;
                }
                for (name, value) in &upstream {
                    if let Err(status) =
                        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                    {
                        self.worker.log(
                            Level::Error,
                            "cannot set a request header",
                            format_args!("{name}: {status:?}"),
                        );
                    }
                }
                self.response_headers = response;
                true
            }
            Action::Reply(reply) => {
                self.send(reply);
                false
            }
            Action::Hold(reply) => {
                if let Err(reply) = self.hold(reply) {
                    self.send(reply);
                }
                false
            }
        }
    }

    /// Removes what must not reach the backend from a request about to go upstream: the
    /// reserved headers the client sent and, on a limited route, the API key (unless
    /// `api_key.forward`). Done only for a request that goes upstream (a local reply needs no
    /// cleaning, and a flood of them should not pay for it); on failure the request is
    /// refused, never forwarded unclean.
    fn strip_for_upstream(&self) -> bool {
        let key_headers = self
            .key_from_authorization
            .map(|from_authorization| self.settings.key_headers_to_remove(from_authorization))
            .unwrap_or_default();
        for name in self.reserved.iter().copied().chain(key_headers) {
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
                self.worker.log(
                    Level::Error,
                    "cannot remove a request header",
                    format_args!("{name}: {status:?}"),
                );
                self.send(outcome::internal_error());
                return false;
            }
        }
        true
    }

    fn send(&self, reply: LocalReply) {
        send_reply(&self.worker, reply);
    }

    /// Holds `reply` before it is sent (see [`crate::held_replies`]); gives it back when holds
    /// are off or the worker holds its most already.
    fn hold(&mut self, reply: LocalReply) -> Result<(), LocalReply> {
        let Some(hold) = &self.settings.held_replies else {
            return Err(reply);
        };
        let held = self.worker.hold(self.context_id, reply, hold);
        self.held = held.is_ok();
        let stat = match held {
            Ok(()) => Stat::RepliesHeld,
            Err(_) => Stat::RepliesNotHeld,
        };
        self.worker.count(self.route_stats, &[stat]);
        held
    }

    /// On a usage request: hands the key's cached denials, not yet reported, to the
    /// control-plane in a request header, so the usage it answers counts them.
    fn report_unreported_denials(&self, headers: &RequestHeaders) {
        let Some(cache) = &self.settings.deny_cache else {
            return;
        };
        let (key_header, authorization) = headers.key_headers(&self.settings);
        let Ok(api_key) = api_key_extraction::extract(key_header, authorization) else {
            return;
        };
        let unreported: u64 = self
            .settings
            .routes
            .costs()
            .into_iter()
            .map(|cost| cache.take_unreported(&HostSharedData, Fingerprint::of(api_key, cost)))
            .sum();
        if unreported > 0 {
            let value = unreported.to_string();
            if let Err(status) =
                hostcalls::set_map_value(MapType::HttpRequestHeaders, EDGE_DENIED, Some(&value))
            {
                self.worker.log(
                    Level::Error,
                    "cannot report cached denials",
                    format_args!("{status:?}"),
                );
            }
        }
    }

    /// On a route of `budget_refusals`: answers a refusal the control-plane gave this client
    /// and that has not run out; else notes who the client is, for [`Self::remember_refusal`].
    /// Returns whether it answered. A request with a body is answered only when its refusal
    /// is held (see [`crate::held_replies`]); else the control-plane reads and refuses it.
    fn refused_at_edge(&mut self, headers: &RequestHeaders, path: &str, body: bool) -> bool {
        let settings = Rc::clone(&self.settings);
        let Some(refusals) = &settings.budget_refusals else {
            return false;
        };
        if body && settings.held_replies.is_none() {
            return false;
        }
        let Some(route) = refusals.route(path) else {
            return false;
        };
        // Every credential the control-plane may read, whatever the filter's `bearer`.
        let credentials = (
            headers.get(&self.settings.key_header),
            headers.get("authorization"),
        );
        let subject = BudgetRefusals::subject(
            route,
            credentials,
            headers.get("origin"),
            self.worker.client_host(),
        );
        if let Some(reply) = refusals.lookup(&HostSharedData, subject, now_ms()) {
            match self.hold(reply) {
                Ok(()) => {}
                Err(reply) if !body => self.send(reply),
                Err(_) => {
                    self.budget_subject = Some(subject);
                    return false;
                }
            }
            self.worker.count(None, &[Stat::BudgetRefusedCached]);
            return true;
        }
        self.budget_subject = Some(subject);
        false
    }

    /// Remembers the answer of a request on a route of `budget_refusals` if the control-plane
    /// refused it for a budget.
    fn remember_refusal(&mut self) {
        let (Some(subject), Some(refusals)) =
            (self.budget_subject.take(), &self.settings.budget_refusals)
        else {
            return;
        };
        // Most answers are not refusals: one small read tells.
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
        if !matches!(status, Ok(Some(status)) if status == "429") {
            return;
        }
        match hostcalls::get_map_bytes(MapType::HttpResponseHeaders) {
            Ok(headers) => {
                refusals.remember(&HostSharedData, subject, &headers, now_ms());
            }
            Err(status) => self.worker.log(
                Level::Error,
                "cannot read the response headers",
                format_args!("{status:?}"),
            ),
        }
    }

    /// Counts, caches and carries out a decision or its failure. Returns whether the stream
    /// may continue.
    fn decided(&mut self, answer: Result<Answer, CalloutFailure>) -> bool {
        if let Err(failure) = &answer {
            let mode = self.settings.failure_mode;
            self.worker.log(
                Level::Warn,
                failure.log_cause(),
                format_args!("{failure}; failure mode {mode:?}"),
            );
        }
        let Some(pending) = self.pending.take() else {
            // Only a callout this stream sent gets here, and it set `pending` first; should a
            // second answer ever come, the stream is not left hanging.
            self.send(outcome::internal_error());
            return false;
        };
        let (counts, action) =
            request_path::after_answer(&self.settings, &HostSharedData, &pending, answer, now_ms);
        self.worker.count_all(self.route_stats, &counts);
        self.apply(action)
    }

    /// The limited-route part of the request phase: an answer from the deny cache, a lease or
    /// the invalid-key budget, or the callout. Returns whether the stream may continue now.
    fn limited(&mut self, headers: &RequestHeaders, route_name: &str, cost: u32) -> bool {
        self.route_stats = self.worker.route(route_name);
        let (key_header, authorization) = headers.key_headers(&self.settings);
        let api_key = match api_key_extraction::extract(key_header, authorization) {
            Ok(key) => key,
            Err(error) => {
                self.worker.count(self.route_stats, &[Stat::Unauthorized]);
                self.send(outcome::on_key_error(error));
                return false;
            }
        };
        // The key header wins whenever it is present (see `api_key_extraction::extract`).
        self.key_from_authorization = Some(key_header.is_none());

        let settings = Rc::clone(&self.settings);
        let worker = Rc::clone(&self.worker);
        // Read once, before the callout leaves: a lease's deadline counts from it.
        let now = now_ms();
        let request = (api_key, route_name, cost);
        let before = self.worker.with_batches(self.route_stats, |batches| {
            request_path::before_callout(&settings, &HostSharedData, batches, request, now, || {
                worker.client()
            })
        });
        match before {
            Before::Answered { counts, action } => {
                self.worker.count_all(self.route_stats, &counts);
                self.apply(action)
            }
            Before::Callout { counts, pending } => {
                self.worker.count_all(self.route_stats, &counts);
                let trace: Vec<(&'static str, &str)> =
                    [trace_context::TRACEPARENT, trace_context::REQUEST_ID]
                        .into_iter()
                        .filter_map(|name| {
                            let value = headers.get(name)?;
                            Some((name, trace_context::forwardable(name, value)?))
                        })
                        .collect();
                let sent = self.dispatch(&pending.request(api_key, route_name, cost), &trace);
                self.pending = Some(pending);
                match sent {
                    // Paused until the answer arrives.
                    Ok(()) => false,
                    Err(failure) => self.decided(Err(failure)),
                }
            }
        }
    }
}

fn continue_if(resume: bool) -> HostAction {
    if resume {
        HostAction::Continue
    } else {
        HostAction::Pause
    }
}

impl Context for RequestContext {
    /// A stream whose reply is held ends before the reply is sent when its client gives up:
    /// its place in the queue is freed at once, for someone else's.
    fn on_done(&mut self) -> bool {
        if self.held {
            self.worker.forget_held(self.context_id);
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        let answer = match hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders) {
            Ok(headers) => {
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .and_then(|(_, v)| std::str::from_utf8(v).ok())
                };
                let status = header(":status").and_then(|s| s.parse().ok());
                Answer::parse(status, header).map_err(CalloutFailure::from_protocol)
            }
            Err(status) => Err(CalloutFailure::Host(format!("{status:?}"))),
        };
        let resume = self.decided(answer);
        if resume && let Err(status) = hostcalls::resume_http_request() {
            self.worker.log(
                Level::Error,
                "cannot resume the request",
                format_args!("{status:?}"),
            );
        }
    }
}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> HostAction {
        let Some(headers) = RequestHeaders::fetch(&self.worker) else {
            self.send(outcome::internal_error());
            return HostAction::Pause;
        };
        self.reserved = headers.reserved();
        let Some(path) = headers.get(":path") else {
            return continue_if(self.strip_for_upstream());
        };
        // Lossy, so a stray invalid byte after a limited prefix cannot skip the limit.
        let path = String::from_utf8_lossy(path);
        let settings = Rc::clone(&self.settings);
        let Some(route) = settings.routes.find(&path) else {
            if self.refused_at_edge(&headers, &path, !end_of_stream) {
                return HostAction::Pause;
            }
            if !self.strip_for_upstream() {
                return HostAction::Pause;
            }
            if settings
                .usage_routes
                .iter()
                .any(|p| routes::matches(p, &path))
            {
                self.report_unreported_denials(&headers);
            }
            return HostAction::Continue;
        };
        continue_if(self.limited(&headers, &route.name, route.cost))
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        self.remember_refusal();
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if let Err(status) =
                hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(&value))
            {
                self.worker.log(
                    Level::Error,
                    "cannot set a response header",
                    format_args!("{name}: {status:?}"),
                );
            }
        }
        HostAction::Continue
    }
}
