//! Credentials the gateway obtains itself: OAuth access tokens (Azure Entra ID,
//! Google) and temporary AWS keys (STS), exchanged through HTTP calls the host makes
//! for the core ([`Callout`]s) and kept until shortly before they expire.
//!
//! One [`Slot`] per distinct exchange holds the current credential for the whole
//! process: the host keeps one [`Registry`], so every worker and both filter
//! instances (router and upstream) share it. A request that needs the credential
//! [`Slot::acquire`]s it and gets one of:
//! - [`Acquire::Ready`]: a usable credential. Once it is inside its refresh window,
//!   the acquire also queues a background exchange (one per slot) that the host runs
//!   outside any request ([`Registry::take_queued`]); the request does not wait.
//! - [`Acquire::Lead`]: nothing usable and no exchange running: this request runs
//!   the exchange with its own callouts ([`ExchangeJob`]); others wait for it.
//! - [`Acquire::Wait`]: an exchange is running: park until it ends, then acquire
//!   again.
//! - [`Acquire::Failed`]: the last exchange failed less than [`FAILURE_BACKOFF_MS`]
//!   ago: answer 503 now, so a broken token endpoint sees one exchange at a time.
//!
//! A job dropped before it finished (its request went away, its host config was
//! destroyed) gives the slot back and wakes the waiters, one of which leads next.
//!
//! Times are Unix milliseconds, passed in by the caller: nothing here reads a clock.

mod aws;
mod azure;
mod google;
mod jwt;
mod oidc;

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::Duration;

use serde_json::Value;

use crate::auth::secrets::{Secret, SecretStore};
use crate::auth::sigv4::Credentials;
use crate::config::backend::AwsCredentials;
use crate::host::{Callout, CalloutResult};

/// After a failed exchange, requests fail at once for this long instead of starting
/// another one.
pub const FAILURE_BACKOFF_MS: u64 = 1_000;

/// The longest a refresh starts before expiry; shorter-lived tokens refresh once a
/// third of their life is left.
const MAX_REFRESH_WINDOW_MS: u64 = 300_000;

/// The longest a credential is given up before it expires (clock skew, the time a
/// request takes to reach the provider); shorter-lived ones keep a tenth of their life.
const MAX_EXPIRY_MARGIN_MS: u64 = 30_000;

/// Default time allowed to each call of an exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// What the configuration asks for.

/// A URL the gateway calls, split for a callout: the Envoy cluster that reaches it,
/// the `:authority` and the `:path` sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub cluster: String,
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// `url` (`https://host[:port]/path`) reached through `cluster`.
    pub fn parse(cluster: &str, url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or("must start with https:// (or http://)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            return Err(format!("has no usable host: '{authority}'"));
        }
        if path.contains([' ', '#']) {
            return Err("has a path with spaces or a fragment".into());
        }
        if cluster.is_empty() {
            return Err("needs the Envoy cluster that reaches it".into());
        }
        Ok(Endpoint {
            cluster: cluster.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// The same host, another path.
    fn with_path(&self, path: String) -> Endpoint {
        Endpoint {
            path,
            ..self.clone()
        }
    }
}

/// Where an OIDC token to exchange comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The token itself: a file kept fresh by Kubernetes (a projected service
    /// account token), a variable or a value.
    Token(Secret),
    /// A client-credentials grant at an OIDC provider (as Envoy AI Gateway's
    /// `oidcExchangeToken` does); its `access_token` is the token exchanged.
    ClientCredentials(ClientCredentials),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientCredentials {
    pub endpoint: IdpEndpoint,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
}

/// The OIDC provider's token endpoint: given, or found in its discovery document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IdpEndpoint {
    Token(Endpoint),
    /// The issuer URL; `GET <issuer>/.well-known/openid-configuration` names the
    /// token endpoint, which must be on the same host (the same cluster).
    Issuer(Endpoint),
}

/// How an Azure application proves itself to Entra ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AzureCredential {
    ClientSecret(Secret),
    /// Workload identity federation: an OIDC token as the client assertion.
    Federated(Subject),
}

/// One exchange, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Entra ID client credentials: an access token for `scope`.
    Azure {
        tenant: String,
        client_id: String,
        credential: AzureCredential,
        scope: String,
        token: Endpoint,
    },
    /// A Google service-account key: a signed JWT (RS256) for an access token.
    GoogleServiceAccount {
        /// The key file's JSON.
        key: Secret,
        scope: String,
        /// The cluster reaching the key's `token_uri`.
        cluster: String,
        /// Replaces the key's `token_uri`.
        token_url: Option<Endpoint>,
    },
    /// Google workload identity federation: an OIDC token exchanged at Google's
    /// STS, then, optionally, for a service account's token.
    GoogleWorkloadIdentity {
        audience: String,
        subject: Subject,
        scope: String,
        sts: Endpoint,
        impersonate: Option<Impersonation>,
    },
    /// AWS STS `AssumeRoleWithWebIdentity` (unsigned): temporary keys for an OIDC
    /// token.
    AwsWebIdentity {
        role_arn: String,
        session_name: String,
        subject: Subject,
        duration_seconds: Option<u32>,
        sts: Endpoint,
    },
    /// AWS STS `AssumeRole`, signed with other credentials.
    AwsAssumeRole {
        role_arn: String,
        session_name: String,
        external_id: Option<String>,
        duration_seconds: Option<u32>,
        base: AwsCredentials,
        sts: Endpoint,
        /// The region STS is signed for.
        region: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Impersonation {
    pub service_account: String,
    pub endpoint: Endpoint,
}

/// An exchange and the time its calls may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub kind: Kind,
    pub timeout: Duration,
    /// Identity in a [`Registry`]: every field, secrets included.
    key: u64,
}

impl Hash for ExchangeSpec {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl ExchangeSpec {
    pub fn new(kind: Kind, timeout: Duration) -> ExchangeSpec {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        kind.hash(&mut h);
        timeout.hash(&mut h);
        ExchangeSpec {
            kind,
            timeout,
            key: h.finish(),
        }
    }

    /// Whether the exchange yields AWS keys (else a bearer token).
    pub fn is_aws(&self) -> bool {
        matches!(
            self.kind,
            Kind::AwsWebIdentity { .. } | Kind::AwsAssumeRole { .. }
        )
    }

    /// Secrets the host must read: files, then variables.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut out = Vec::new();
        fn of_subject<'a>(s: &'a Subject, out: &mut Vec<&'a Secret>) {
            match s {
                Subject::Token(t) => out.push(t),
                Subject::ClientCredentials(c) => out.push(&c.client_secret),
            }
        }
        match &self.kind {
            Kind::Azure { credential, .. } => match credential {
                AzureCredential::ClientSecret(s) => out.push(s),
                AzureCredential::Federated(s) => of_subject(s, &mut out),
            },
            Kind::GoogleServiceAccount { key, .. } => out.push(key),
            Kind::GoogleWorkloadIdentity { subject, .. } | Kind::AwsWebIdentity { subject, .. } => {
                of_subject(subject, &mut out)
            }
            Kind::AwsAssumeRole { base, .. } => {
                if let AwsCredentials::File { source, .. } = base {
                    out.push(source);
                }
            }
        }
        out
    }

    fn subject(&self) -> Option<&Subject> {
        match &self.kind {
            Kind::Azure {
                credential: AzureCredential::Federated(s),
                ..
            }
            | Kind::GoogleWorkloadIdentity { subject: s, .. }
            | Kind::AwsWebIdentity { subject: s, .. } => Some(s),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------
// What an exchange yields.

/// A credential obtained by an exchange. `Debug` shows no value.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    /// `authorization: Bearer <token>`.
    Bearer(Arc<str>),
    /// Temporary keys for SigV4.
    Aws(Arc<Credentials>),
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Token::Aws(c) => write!(f, "Aws({})", c.access_key_id()),
        }
    }
}

/// Why an exchange failed. The message names hosts, clusters and the provider's
/// error code, never a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeError(String);

impl ExchangeError {
    fn new(message: impl Into<String>) -> ExchangeError {
        ExchangeError(message.into())
    }
}

impl From<&str> for ExchangeError {
    fn from(message: &str) -> Self {
        ExchangeError::new(message)
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------
// Shared state.

/// The slots of a process, by exchange. The host keeps one (native: one per
/// process; wasm: one per VM) and a waker to run queued background exchanges.
#[derive(Default)]
pub struct Registry {
    slots: Mutex<HashMap<u64, Weak<Slot>>>,
    queued: Mutex<Vec<ExchangeJob>>,
    kick: Mutex<Option<Waker>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registry({} slots)", lock(&self.slots).len())
    }
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// The slot of `spec`: the existing one for an equal exchange, else a new one.
    pub fn slot(self: &Arc<Self>, spec: &Arc<ExchangeSpec>) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&spec.key).and_then(Weak::upgrade) {
            return slot;
        }
        slots.retain(|_, w| w.strong_count() > 0);
        let slot = Arc::new(Slot {
            spec: Arc::clone(spec),
            registry: Arc::downgrade(self),
            state: Mutex::new(State::default()),
        });
        slots.insert(spec.key, Arc::downgrade(&slot));
        slot
    }

    /// Called (from any thread) whenever a background exchange is queued: the host
    /// then calls [`Registry::take_queued`] where it can make calls.
    pub fn set_kick(&self, waker: Waker) {
        *lock(&self.kick) = Some(waker);
    }

    /// Background exchanges to run now: `start` each and feed it its answers.
    pub fn take_queued(&self) -> Vec<ExchangeJob> {
        std::mem::take(&mut *lock(&self.queued))
    }

    fn queue(&self, job: ExchangeJob) {
        lock(&self.queued).push(job);
        let kick = lock(&self.kick).clone();
        if let Some(k) = kick {
            k.wake();
        }
    }
}

/// The current credential of one exchange, shared by the process.
pub struct Slot {
    spec: Arc<ExchangeSpec>,
    registry: Weak<Registry>,
    state: Mutex<State>,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("key", &self.spec.key).finish()
    }
}

#[derive(Default)]
struct State {
    held: Option<Held>,
    flight: Flight,
    failed: Option<Failure>,
    waiters: Vec<Weak<WaitCell>>,
}

struct Held {
    token: Token,
    refresh_at: u64,
    usable_until: u64,
}

struct Failure {
    error: ExchangeError,
    until: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Flight {
    #[default]
    Idle,
    /// A request runs the exchange.
    Leading,
    /// Queued or running outside requests.
    Background,
}

/// What a request that needs a slot's credential does now.
#[derive(Debug)]
pub enum Acquire {
    Ready(Token),
    Lead(ExchangeJob),
    Wait(Arc<WaitCell>),
    Failed(ExchangeError),
}

impl Slot {
    pub fn spec(&self) -> &ExchangeSpec {
        &self.spec
    }

    /// See the module docs. `secrets` resolves what the exchange reads (files,
    /// variables) when this call starts one.
    pub fn acquire(self: &Arc<Self>, secrets: &SecretStore, now_ms: u64) -> Acquire {
        let mut st = lock(&self.state);
        if let Some(held) = st.held.as_ref().filter(|h| now_ms < h.usable_until) {
            let token = held.token.clone();
            let backing_off = st.failed.as_ref().is_some_and(|f| now_ms < f.until);
            if now_ms >= held.refresh_at && st.flight == Flight::Idle && !backing_off {
                st.flight = Flight::Background;
                drop(st);
                let job = ExchangeJob::new(Arc::clone(self), secrets, true);
                match self.registry.upgrade() {
                    Some(r) => r.queue(job),
                    None => drop(job),
                }
            }
            return Acquire::Ready(token);
        }
        if st.flight != Flight::Idle {
            let cell = Arc::new(WaitCell::default());
            st.waiters.retain(|w| w.strong_count() > 0);
            st.waiters.push(Arc::downgrade(&cell));
            return Acquire::Wait(cell);
        }
        if let Some(f) = st.failed.as_ref().filter(|f| now_ms < f.until) {
            return Acquire::Failed(f.error.clone());
        }
        st.flight = Flight::Leading;
        drop(st);
        Acquire::Lead(ExchangeJob::new(Arc::clone(self), secrets, false))
    }

    /// The credential, if one is usable now (no exchange is started).
    pub fn current(&self, now_ms: u64) -> Option<Token> {
        let st = lock(&self.state);
        st.held
            .as_ref()
            .filter(|h| now_ms < h.usable_until)
            .map(|h| h.token.clone())
    }

    /// The last failure, if it is recent (for a clear 503 where nothing can wait).
    pub fn recent_failure(&self, now_ms: u64) -> Option<ExchangeError> {
        let st = lock(&self.state);
        st.failed
            .as_ref()
            .filter(|f| now_ms < f.until)
            .map(|f| f.error.clone())
    }

    fn complete(&self, outcome: Result<(Token, u64), ExchangeError>, now_ms: u64) {
        let mut st = lock(&self.state);
        st.flight = Flight::Idle;
        match outcome {
            Ok((token, expires_at)) => {
                let life = expires_at.saturating_sub(now_ms);
                st.held = Some(Held {
                    token,
                    refresh_at: expires_at - (life / 3).min(MAX_REFRESH_WINDOW_MS),
                    usable_until: expires_at - (life / 10).min(MAX_EXPIRY_MARGIN_MS),
                });
                st.failed = None;
            }
            Err(error) => {
                st.failed = Some(Failure {
                    error,
                    until: now_ms + FAILURE_BACKOFF_MS,
                })
            }
        }
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        wake_all(waiters);
    }

    /// A job went away unfinished: the next acquire leads a new one.
    fn abandon(&self) {
        let mut st = lock(&self.state);
        st.flight = Flight::Idle;
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        wake_all(waiters);
    }
}

fn wake_all(waiters: Vec<Weak<WaitCell>>) {
    for w in waiters.iter().filter_map(Weak::upgrade) {
        w.wake();
    }
}

/// A parked request's place in a slot's queue. The slot wakes it when the running
/// exchange ends; the request's host gives the waker ([`WaitCell::set_waker`]),
/// which may come after the wake (then it fires at once).
#[derive(Debug, Default)]
pub struct WaitCell {
    state: Mutex<WaitState>,
}

#[derive(Debug, Default)]
enum WaitState {
    #[default]
    Waiting,
    Parked(Waker),
    Woken,
}

impl WaitCell {
    pub fn set_waker(&self, waker: Waker) {
        let mut st = lock(&self.state);
        match *st {
            WaitState::Woken => {
                drop(st);
                waker.wake();
            }
            _ => *st = WaitState::Parked(waker),
        }
    }

    pub fn is_woken(&self) -> bool {
        matches!(*lock(&self.state), WaitState::Woken)
    }

    fn wake(&self) {
        let previous = std::mem::replace(&mut *lock(&self.state), WaitState::Woken);
        if let WaitState::Parked(w) = previous {
            w.wake();
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update (the host caught
/// it); the state is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------
// Running one exchange.

/// What the driver of a job does next.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Make this call and hand its outcome to [`ExchangeJob::on_result`].
    Call(Callout),
    /// The exchange ended; the slot holds the outcome and its waiters were woken.
    Done(Result<(), ExchangeError>),
}

/// One exchange in progress, driven by a request or by the host in the background.
pub struct ExchangeJob {
    slot: Arc<Slot>,
    background: bool,
    resolved: Result<Resolved, ExchangeError>,
    stage: Stage,
    finished: bool,
}

impl fmt::Debug for ExchangeJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeJob")
            .field("stage", &self.stage)
            .field("background", &self.background)
            .finish()
    }
}

/// The secret values an exchange reads, taken when it starts.
#[derive(Default)]
struct Resolved {
    /// Azure client secret, Google key JSON, AWS base credentials file text.
    main: Option<Arc<str>>,
    /// The OIDC token itself (`Subject::Token`).
    subject: Option<Arc<str>>,
    /// The client secret at the OIDC provider (`Subject::ClientCredentials`).
    idp: Option<Arc<str>>,
}

#[derive(Debug)]
enum Stage {
    Start,
    /// Waiting for the OIDC provider's discovery document.
    Discovery,
    /// Waiting for the OIDC provider's token.
    SubjectToken,
    /// Waiting for the cloud's token endpoint.
    Main,
    /// Google: waiting for the service account's token.
    Impersonation,
    Over,
}

impl Drop for ExchangeJob {
    fn drop(&mut self) {
        if !self.finished {
            self.slot.abandon();
        }
    }
}

impl ExchangeJob {
    fn new(slot: Arc<Slot>, secrets: &SecretStore, background: bool) -> ExchangeJob {
        let resolved = resolve(&slot.spec, secrets);
        ExchangeJob {
            slot,
            background,
            resolved,
            stage: Stage::Start,
            finished: false,
        }
    }

    /// Whether the host runs it outside requests.
    pub fn is_background(&self) -> bool {
        self.background
    }

    /// The exchange's first call.
    pub fn start(&mut self, now_ms: u64) -> Step {
        if !matches!(self.stage, Stage::Start) {
            return Step::Done(Err(ExchangeError::new("exchange started twice")));
        }
        let resolved = match &self.resolved {
            Ok(r) => r,
            Err(e) => {
                let e = e.clone();
                return self.finish(Err(e), now_ms);
            }
        };
        let spec = Arc::clone(&self.slot.spec);
        match (spec.subject(), &resolved.subject) {
            (Some(Subject::ClientCredentials(cc)), _) => {
                let idp_secret = resolved.idp.clone().unwrap_or_default();
                match &cc.endpoint {
                    IdpEndpoint::Issuer(issuer) => {
                        self.stage = Stage::Discovery;
                        Step::Call(oidc::discovery(issuer, spec.timeout))
                    }
                    IdpEndpoint::Token(endpoint) => {
                        self.stage = Stage::SubjectToken;
                        Step::Call(oidc::token_request(endpoint, cc, &idp_secret, spec.timeout))
                    }
                }
            }
            (Some(Subject::Token(_)), Some(token)) => {
                let token = Arc::clone(token);
                self.main_call(&token, now_ms)
            }
            _ => self.main_call("", now_ms),
        }
    }

    /// The outcome of the last call: the next call, or the end.
    pub fn on_result(&mut self, result: &CalloutResult, now_ms: u64) -> Step {
        let spec = Arc::clone(&self.slot.spec);
        let stage = std::mem::replace(&mut self.stage, Stage::Over);
        let outcome = match stage {
            Stage::Discovery => {
                let Some(Subject::ClientCredentials(cc)) = spec.subject() else {
                    return self.finish(Err(ExchangeError::new("no OIDC provider")), now_ms);
                };
                let IdpEndpoint::Issuer(issuer) = &cc.endpoint else {
                    return self.finish(Err(ExchangeError::new("no OIDC issuer")), now_ms);
                };
                match oidc::token_endpoint(issuer, result) {
                    Ok(endpoint) => {
                        let secret = self.idp_secret();
                        self.stage = Stage::SubjectToken;
                        return Step::Call(oidc::token_request(
                            &endpoint,
                            cc,
                            &secret,
                            spec.timeout,
                        ));
                    }
                    Err(e) => Err(e),
                }
            }
            Stage::SubjectToken => match oidc::access_token(result) {
                Ok(subject) => return self.main_call(&subject, now_ms),
                Err(e) => Err(e),
            },
            Stage::Main => match &spec.kind {
                Kind::Azure { .. } => azure::token(result, now_ms),
                Kind::GoogleServiceAccount { .. } => google::oauth_token(result, now_ms),
                Kind::GoogleWorkloadIdentity {
                    impersonate, scope, ..
                } => match (google::sts_token(result, now_ms), impersonate) {
                    (Ok((Token::Bearer(federated), _)), Some(imp)) => {
                        self.stage = Stage::Impersonation;
                        return Step::Call(google::impersonation_request(
                            imp,
                            scope,
                            &federated,
                            spec.timeout,
                        ));
                    }
                    (outcome, _) => outcome,
                },
                Kind::AwsWebIdentity { .. } | Kind::AwsAssumeRole { .. } => {
                    aws::credentials(result)
                }
            },
            Stage::Impersonation => google::impersonated_token(result),
            Stage::Start | Stage::Over => Err(ExchangeError::new("no call was made")),
        };
        self.finish(outcome, now_ms)
    }

    fn idp_secret(&self) -> Arc<str> {
        self.resolved
            .as_ref()
            .ok()
            .and_then(|r| r.idp.clone())
            .unwrap_or_default()
    }

    /// The call to the cloud's own token endpoint, with the OIDC token if any.
    fn main_call(&mut self, subject: &str, now_ms: u64) -> Step {
        let spec = Arc::clone(&self.slot.spec);
        let main = self
            .resolved
            .as_ref()
            .ok()
            .and_then(|r| r.main.clone())
            .unwrap_or_default();
        let call = match &spec.kind {
            Kind::Azure {
                tenant: _,
                client_id,
                credential,
                scope,
                token,
            } => Ok(azure::token_request(
                token,
                client_id,
                scope,
                match credential {
                    AzureCredential::ClientSecret(_) => azure::Proof::Secret(&main),
                    AzureCredential::Federated(_) => azure::Proof::Assertion(subject),
                },
                spec.timeout,
            )),
            Kind::GoogleServiceAccount {
                scope,
                cluster,
                token_url,
                ..
            } => google::oauth_request(
                &main,
                scope,
                cluster,
                token_url.as_ref(),
                now_ms / 1000,
                spec.timeout,
            ),
            Kind::GoogleWorkloadIdentity {
                audience,
                scope,
                sts,
                ..
            } => Ok(google::sts_request(
                sts,
                audience,
                scope,
                subject,
                spec.timeout,
            )),
            Kind::AwsWebIdentity {
                role_arn,
                session_name,
                duration_seconds,
                sts,
                ..
            } => Ok(aws::web_identity_request(
                sts,
                role_arn,
                session_name,
                subject,
                *duration_seconds,
                spec.timeout,
            )),
            Kind::AwsAssumeRole {
                role_arn,
                session_name,
                external_id,
                duration_seconds,
                base,
                sts,
                region,
            } => aws::base_credentials(base, &main).and_then(|creds| {
                aws::assume_role_request(
                    sts,
                    region,
                    &creds,
                    aws::AssumeRole {
                        role_arn,
                        session_name,
                        external_id: external_id.as_deref(),
                        duration_seconds: *duration_seconds,
                    },
                    now_ms / 1000,
                    spec.timeout,
                )
            }),
        };
        match call {
            Ok(call) => {
                self.stage = Stage::Main;
                Step::Call(call)
            }
            Err(e) => self.finish(Err(e), now_ms),
        }
    }

    fn finish(&mut self, outcome: Result<(Token, u64), ExchangeError>, now_ms: u64) -> Step {
        self.stage = Stage::Over;
        self.finished = true;
        let outcome = outcome.and_then(|(token, expires_at)| {
            if expires_at <= now_ms {
                Err(ExchangeError::new(
                    "the credential obtained has already expired",
                ))
            } else {
                Ok((token, expires_at))
            }
        });
        let result = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
        self.slot.complete(outcome, now_ms);
        Step::Done(result)
    }
}

fn resolve(spec: &ExchangeSpec, secrets: &SecretStore) -> Result<Resolved, ExchangeError> {
    let read = |s: &Secret| {
        secrets.resolve(s).ok_or_else(|| {
            ExchangeError::new(format!(
                "the credential {} could not be read",
                crate::auth::describe(s)
            ))
        })
    };
    let mut r = Resolved::default();
    match &spec.kind {
        Kind::Azure {
            credential: AzureCredential::ClientSecret(s),
            ..
        }
        | Kind::GoogleServiceAccount { key: s, .. } => r.main = Some(read(s)?),
        Kind::AwsAssumeRole {
            base: AwsCredentials::File { source, .. },
            ..
        } => r.main = Some(read(source)?),
        _ => {}
    }
    match spec.subject() {
        Some(Subject::Token(s)) => r.subject = Some(read(s)?),
        Some(Subject::ClientCredentials(cc)) => r.idp = Some(read(&cc.client_secret)?),
        None => {}
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------
// Pieces the providers' modules share.

/// A `POST` of form fields.
fn post_form(
    endpoint: &Endpoint,
    fields: &[(&str, &str)],
    extra: Vec<(String, String)>,
    timeout: Duration,
) -> Callout {
    let body = form(fields);
    post(
        endpoint,
        "application/x-www-form-urlencoded",
        body.into_bytes(),
        extra,
        timeout,
    )
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

fn post(
    endpoint: &Endpoint,
    content_type: &str,
    body: Vec<u8>,
    extra: Vec<(String, String)>,
    timeout: Duration,
) -> Callout {
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), endpoint.path.clone()),
        (":authority".to_string(), endpoint.authority.clone()),
        ("content-type".to_string(), content_type.to_string()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    headers.extend(extra);
    Callout {
        cluster: endpoint.cluster.clone(),
        headers,
        body,
        timeout,
    }
}

fn get(endpoint: &Endpoint, timeout: Duration) -> Callout {
    Callout {
        cluster: endpoint.cluster.clone(),
        headers: vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), endpoint.path.clone()),
            (":authority".to_string(), endpoint.authority.clone()),
            ("accept".to_string(), "application/json".to_string()),
        ],
        body: Vec::new(),
        timeout,
    }
}

/// The JSON body of a successful answer, or why there is none: the call failed, or
/// the endpoint answered an error (named by its code where the body has one).
fn json_answer(result: &CalloutResult, what: &str) -> Result<Value, ExchangeError> {
    let (status, body) = match result {
        CalloutResult::Failed(why) => {
            return Err(ExchangeError::new(format!(
                "the call to {what} failed ({why})"
            )))
        }
        CalloutResult::Response { status, body, .. } => (*status, body),
    };
    if !(200..300).contains(&status) {
        let code = error_code(body)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        return Err(ExchangeError::new(format!(
            "{what} answered {status}{code}"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|_| ExchangeError::new(format!("{what} answered with a body that is not JSON")))
}

/// The error code of a token endpoint's error body: OAuth's `error`, Google's
/// `error.status`, AWS's `Error.Code` (JSON or XML). Short, and never a credential.
fn error_code(body: &[u8]) -> Option<String> {
    let code = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v["error"]
            .as_str()
            .or_else(|| v["error"]["status"].as_str())
            .or_else(|| v["Error"]["Code"].as_str())
            .map(str::to_string),
        Err(_) => xml_text(&String::from_utf8_lossy(body), "Code"),
    }?;
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// The text of the first `<tag>` element of an XML document (AWS's query API
/// answers: element texts are plain, with the five XML entities).
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let raw = xml[start..start + len].trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `expires_in` as Entra ID and Google send it (a number, or a numeric string).
fn expires_in(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .or_else(|| v.as_str()?.trim().parse().ok())
}

/// A bearer token answer: `access_token` and `expires_in` (seconds from now).
fn bearer_answer(v: &Value, what: &str, now_ms: u64) -> Result<(Token, u64), ExchangeError> {
    let token = v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ExchangeError::new(format!("{what} answered without access_token")))?;
    let secs = expires_in(&v["expires_in"])
        .ok_or_else(|| ExchangeError::new(format!("{what} answered without expires_in")))?;
    Ok((
        Token::Bearer(Arc::from(token)),
        now_ms.saturating_add(secs.saturating_mul(1000)),
    ))
}

#[cfg(test)]
mod tests;
