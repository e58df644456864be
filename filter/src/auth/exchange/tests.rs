//! Exchanges and their shared slots, with no host: calls are inspected and answered
//! by hand, time is passed in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey;
use serde_json::{json, Value};

use super::*;
use crate::auth::secrets::SecretStore;

const KEY_PEM: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/exchange/test-sa-key.pem"
));
const PUB_PEM: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/exchange/test-sa-key.pub.pem"
));
const T0: u64 = 1_765_000_000_000;

fn endpoint(cluster: &str, url: &str) -> Endpoint {
    Endpoint::parse(cluster, url).unwrap()
}

fn azure_secret() -> Arc<ExchangeSpec> {
    Arc::new(ExchangeSpec::new(
        Kind::Azure {
            tenant: "tenant-1".into(),
            client_id: "app-1".into(),
            credential: AzureCredential::ClientSecret(Secret::Inline(Arc::from("s3cret"))),
            scope: "https://cognitiveservices.azure.com/.default".into(),
            token: endpoint(
                "entra",
                "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token",
            ),
        },
        DEFAULT_TIMEOUT,
    ))
}

fn ok(body: Value) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        headers: vec![(":status".into(), "200".into())],
        body: body.to_string().into_bytes(),
    }
}

fn error(status: u16, body: &str) -> CalloutResult {
    CalloutResult::Response {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

fn form(call: &Callout) -> Vec<(String, String)> {
    form_urlencoded::parse(&call.body).into_owned().collect()
}

fn field(call: &Callout, name: &str) -> Option<String> {
    form(call)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn call_of(step: Step) -> Callout {
    match step {
        Step::Call(c) => c,
        other => panic!("expected a call, got {other:?}"),
    }
}

fn bearer(t: Token) -> String {
    match t {
        Token::Bearer(b) => b.to_string(),
        other => panic!("expected a bearer token, got {other:?}"),
    }
}

#[derive(Default)]
struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn endpoints_split_urls() {
    let e = endpoint("c", "https://sts.us-east-1.amazonaws.com/");
    assert_eq!(
        (e.authority.as_str(), e.path.as_str()),
        ("sts.us-east-1.amazonaws.com", "/")
    );
    let e = endpoint("c", "http://127.0.0.1:8080");
    assert_eq!(
        (e.authority.as_str(), e.path.as_str()),
        ("127.0.0.1:8080", "/")
    );
    assert!(Endpoint::parse("c", "ftp://x/").is_err());
    assert!(Endpoint::parse("c", "https:///path").is_err());
    assert!(Endpoint::parse("", "https://x/").is_err());
}

#[test]
fn azure_client_secret_exchange() {
    let registry = Registry::new();
    let slot = registry.slot(&azure_secret());
    let secrets = SecretStore::default();
    let Acquire::Lead(mut job) = slot.acquire(&secrets, T0) else {
        panic!("the first request leads");
    };
    let call = call_of(job.start(T0));
    assert_eq!(call.cluster, "entra");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":authority"), Some("login.microsoftonline.com"));
    assert_eq!(call.header(":path"), Some("/tenant-1/oauth2/v2.0/token"));
    assert_eq!(
        call.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        field(&call, "grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(field(&call, "client_id").as_deref(), Some("app-1"));
    assert_eq!(field(&call, "client_secret").as_deref(), Some("s3cret"));
    assert_eq!(
        field(&call, "scope").as_deref(),
        Some("https://cognitiveservices.azure.com/.default")
    );
    // Debug output never shows the body (it holds the secret).
    assert!(!format!("{call:?}").contains("s3cret"));
    let done = job.on_result(
        &ok(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "tok-1"})),
        T0,
    );
    assert_eq!(done, Step::Done(Ok(())));
    match slot.acquire(&secrets, T0 + 1000) {
        Acquire::Ready(t) => assert_eq!(bearer(t), "tok-1"),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{:?}", slot.current(T0)).contains("tok-1"));
}

#[test]
fn one_exchange_for_many_requests_and_waiters_are_woken() {
    let registry = Registry::new();
    let slot = registry.slot(&azure_secret());
    let secrets = SecretStore::default();
    let Acquire::Lead(mut job) = slot.acquire(&secrets, T0) else {
        panic!()
    };
    let _call = call_of(job.start(T0));
    let wakes = Arc::new(CountWakes::default());
    let mut cells = Vec::new();
    for _ in 0..5 {
        match slot.acquire(&secrets, T0) {
            Acquire::Wait(cell) => cells.push(cell),
            other => panic!("others wait: {other:?}"),
        }
    }
    // A waker given before the end fires at the end; one given after fires at once.
    for cell in &cells[..4] {
        cell.set_waker(Waker::from(wakes.clone()));
    }
    let _ = job.on_result(&ok(json!({"access_token": "t", "expires_in": "60"})), T0);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 4);
    cells[4].set_waker(Waker::from(wakes.clone()));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 5);
    assert!(cells.iter().all(|c| c.is_woken()));
    assert!(matches!(slot.acquire(&secrets, T0), Acquire::Ready(_)));
}

#[test]
fn a_failed_exchange_fails_waiters_and_backs_off() {
    let registry = Registry::new();
    let slot = registry.slot(&azure_secret());
    let secrets = SecretStore::default();
    let Acquire::Lead(mut job) = slot.acquire(&secrets, T0) else {
        panic!()
    };
    let _ = call_of(job.start(T0));
    let Acquire::Wait(cell) = slot.acquire(&secrets, T0) else {
        panic!()
    };
    let answer = error(
        401,
        r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret s3cret provided."}"#,
    );
    let Step::Done(Err(e)) = job.on_result(&answer, T0) else {
        panic!()
    };
    // The provider's code, never its description (which may echo what was sent).
    assert_eq!(e.to_string(), "Entra ID answered 401 (invalid_client)");
    assert!(cell.is_woken());
    match slot.acquire(&secrets, T0 + 10) {
        Acquire::Failed(f) => assert_eq!(f, e),
        other => panic!("backing off: {other:?}"),
    }
    assert!(slot.recent_failure(T0 + 10).is_some());
    // After the backoff, the next request tries again.
    assert!(matches!(
        slot.acquire(&secrets, T0 + FAILURE_BACKOFF_MS),
        Acquire::Lead(_)
    ));
}

#[test]
fn an_abandoned_exchange_is_handed_on() {
    let registry = Registry::new();
    let slot = registry.slot(&azure_secret());
    let secrets = SecretStore::default();
    let Acquire::Lead(mut job) = slot.acquire(&secrets, T0) else {
        panic!()
    };
    let _ = call_of(job.start(T0));
    let Acquire::Wait(cell) = slot.acquire(&secrets, T0) else {
        panic!()
    };
    drop(job); // the leading request went away
    assert!(cell.is_woken());
    assert!(matches!(slot.acquire(&secrets, T0), Acquire::Lead(_)));
}

#[test]
fn calls_that_fail_or_time_out_fail_the_exchange() {
    let secrets = SecretStore::default();
    for (answer, message) in [
        (
            CalloutResult::Failed("the connection failed or was reset"),
            "the call to Entra ID failed (the connection failed or was reset)",
        ),
        (
            error(504, "upstream request timeout"),
            "Entra ID answered 504",
        ),
        (
            error(200, "not json"),
            "Entra ID answered with a body that is not JSON",
        ),
        (
            ok(json!({"token_type": "Bearer", "expires_in": 60})),
            "Entra ID answered without access_token",
        ),
        (
            ok(json!({"access_token": "t", "expires_in": 0})),
            "the credential obtained has already expired",
        ),
    ] {
        let registry = Registry::new();
        let slot = registry.slot(&azure_secret());
        let Acquire::Lead(mut job) = slot.acquire(&secrets, T0) else {
            panic!()
        };
        let _ = call_of(job.start(T0));
        assert_eq!(
            job.on_result(&answer, T0),
            Step::Done(Err(ExchangeError::new(message)))
        );
    }
}

#[test]
fn refresh_runs_in_the_background_ahead_of_expiry() {
    let registry = Registry::new();
    let kicks = Arc::new(CountWakes::default());
    registry.set_kick(Waker::from(kicks.clone()));
    let slot = registry.slot(&azure_secret());
    let secrets = SecretStore::default();
    let Acquire::Lead(mut job) = slot.acquire(&secrets, T0) else {
        panic!()
    };
    let _ = call_of(job.start(T0));
    // 60 s: refresh 20 s before expiry, given up 6 s before it.
    let _ = job.on_result(&ok(json!({"access_token": "old", "expires_in": 60})), T0);
    assert!(matches!(
        slot.acquire(&secrets, T0 + 39_000),
        Acquire::Ready(_)
    ));
    assert!(registry.take_queued().is_empty());
    // In the window: the old token still serves, and one refresh is queued.
    for _ in 0..3 {
        match slot.acquire(&secrets, T0 + 41_000) {
            Acquire::Ready(t) => assert_eq!(bearer(t), "old"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(kicks.0.load(Ordering::SeqCst), 1);
    let mut queued = registry.take_queued();
    assert_eq!(queued.len(), 1);
    let mut refresh = queued.pop().unwrap();
    assert!(refresh.is_background());
    let _ = call_of(refresh.start(T0 + 41_000));
    let _ = refresh.on_result(
        &ok(json!({"access_token": "new", "expires_in": 60})),
        T0 + 41_500,
    );
    match slot.acquire(&secrets, T0 + 55_000) {
        Acquire::Ready(t) => assert_eq!(bearer(t), "new"),
        other => panic!("{other:?}"),
    }
    // Past the margin with no refresh: nothing usable, a request leads.
    assert!(matches!(
        slot.acquire(&secrets, T0 + 41_500 + 54_001),
        Acquire::Lead(_)
    ));
}

#[test]
fn equal_exchanges_share_a_slot_and_secrets_tell_them_apart() {
    let registry = Registry::new();
    let a = registry.slot(&azure_secret());
    let b = registry.slot(&azure_secret());
    assert!(Arc::ptr_eq(&a, &b));
    let other = Arc::new(ExchangeSpec::new(
        Kind::Azure {
            tenant: "tenant-1".into(),
            client_id: "app-1".into(),
            credential: AzureCredential::ClientSecret(Secret::Inline(Arc::from("other"))),
            scope: "https://cognitiveservices.azure.com/.default".into(),
            token: endpoint(
                "entra",
                "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token",
            ),
        },
        DEFAULT_TIMEOUT,
    ));
    assert!(!Arc::ptr_eq(&a, &registry.slot(&other)));
}

#[test]
fn an_unreadable_secret_fails_without_a_call() {
    let spec = Arc::new(ExchangeSpec::new(
        Kind::Azure {
            tenant: "t".into(),
            client_id: "c".into(),
            credential: AzureCredential::ClientSecret(Secret::File("/run/secret".into())),
            scope: "s".into(),
            token: endpoint(
                "entra",
                "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            ),
        },
        DEFAULT_TIMEOUT,
    ));
    let registry = Registry::new();
    let slot = registry.slot(&spec);
    let Acquire::Lead(mut job) = slot.acquire(&SecretStore::default(), T0) else {
        panic!()
    };
    assert_eq!(
        job.start(T0),
        Step::Done(Err(ExchangeError::new(
            "the credential file /run/secret could not be read"
        )))
    );
}

fn jwt_parts(jwt: &str) -> (Value, Value, Vec<u8>, String) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).unwrap();
    (
        serde_json::from_slice(&decode(parts[0])).unwrap(),
        serde_json::from_slice(&decode(parts[1])).unwrap(),
        decode(parts[2]),
        format!("{}.{}", parts[0], parts[1]),
    )
}

#[test]
fn google_service_account_signs_a_jwt_the_public_key_verifies() {
    let key = json!({
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "kid-1",
        "private_key": KEY_PEM,
        "client_email": "gw@p.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let spec = Arc::new(ExchangeSpec::new(
        Kind::GoogleServiceAccount {
            key: Secret::Inline(Arc::from(key.to_string())),
            scope: "https://www.googleapis.com/auth/cloud-platform".into(),
            cluster: "google".into(),
            token_url: None,
        },
        DEFAULT_TIMEOUT,
    ));
    let registry = Registry::new();
    let slot = registry.slot(&spec);
    let Acquire::Lead(mut job) = slot.acquire(&SecretStore::default(), T0) else {
        panic!()
    };
    let call = call_of(job.start(T0));
    assert_eq!(call.header(":authority"), Some("oauth2.googleapis.com"));
    assert_eq!(call.header(":path"), Some("/token"));
    assert_eq!(
        field(&call, "grant_type").as_deref(),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let (header, claims, signature, signed) = jwt_parts(&field(&call, "assertion").unwrap());
    assert_eq!(
        header,
        json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
    );
    assert_eq!(claims["iss"], "gw@p.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(claims["iat"], T0 / 1000);
    assert_eq!(claims["exp"], T0 / 1000 + 3600);
    let public = rsa::PublicKey::from_public_key_pem(PUB_PEM).unwrap();
    public
        .pkcs1v15_verify::<rsa::sha2::Sha256>(signed.as_bytes(), &signature)
        .expect("the signature verifies with the key's public half");
    let mut tampered = signed.clone().into_bytes();
    tampered[5] ^= 1;
    assert!(public
        .pkcs1v15_verify::<rsa::sha2::Sha256>(&tampered, &signature)
        .is_err());
    let _ = job.on_result(
        &ok(json!({"access_token": "ya29.x", "expires_in": 3599, "token_type": "Bearer"})),
        T0,
    );
    assert_eq!(bearer(slot.current(T0).unwrap()), "ya29.x");
}

#[test]
fn google_service_account_key_problems_are_named() {
    for (key, message) in [
        ("not json".to_string(), "the service-account key is not JSON"),
        (
            json!({"private_key": KEY_PEM}).to_string(),
            "the service-account key has no client_email",
        ),
        (
            json!({"client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}).to_string(),
            "the service-account key's private_key is not an RSA PEM key",
        ),
    ] {
        let spec = Arc::new(ExchangeSpec::new(
            Kind::GoogleServiceAccount {
                key: Secret::Inline(Arc::from(key)),
                scope: "s".into(),
                cluster: "google".into(),
                token_url: None,
            },
            DEFAULT_TIMEOUT,
        ));
        let registry = Registry::new();
        let Acquire::Lead(mut job) = registry.slot(&spec).acquire(&SecretStore::default(), T0) else {
            panic!()
        };
        assert_eq!(
            job.start(T0),
            Step::Done(Err(ExchangeError::new(message)))
        );
    }
}

fn client_credentials(endpoint: IdpEndpoint) -> Subject {
    Subject::ClientCredentials(ClientCredentials {
        endpoint,
        client_id: "gw".into(),
        client_secret: Secret::Inline(Arc::from("idp-secret")),
        scopes: vec!["sts".into(), "openid".into()],
    })
}

#[test]
fn workload_identity_discovers_the_idp_exchanges_and_impersonates() {
    let spec = Arc::new(ExchangeSpec::new(
        Kind::GoogleWorkloadIdentity {
            audience: "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/providers/x".into(),
            subject: client_credentials(IdpEndpoint::Issuer(endpoint("idp", "https://idp.example/realms/r"))),
            scope: "https://www.googleapis.com/auth/cloud-platform".into(),
            sts: endpoint("gsts", "https://sts.googleapis.com/v1/token"),
            impersonate: Some(Impersonation {
                service_account: "sa@p.iam.gserviceaccount.com".into(),
                endpoint: endpoint("iam", "https://iamcredentials.googleapis.com"),
            }),
        },
        DEFAULT_TIMEOUT,
    ));
    let registry = Registry::new();
    let slot = registry.slot(&spec);
    let Acquire::Lead(mut job) = slot.acquire(&SecretStore::default(), T0) else {
        panic!()
    };
    let discovery = call_of(job.start(T0));
    assert_eq!(discovery.header(":method"), Some("GET"));
    assert_eq!(
        discovery.header(":path"),
        Some("/realms/r/.well-known/openid-configuration")
    );
    let token = call_of(job.on_result(
        &ok(json!({"issuer": "https://idp.example/realms/r",
                   "token_endpoint": "https://idp.example/realms/r/protocol/openid-connect/token"})),
        T0,
    ));
    assert_eq!(token.cluster, "idp");
    assert_eq!(
        token.header(":path"),
        Some("/realms/r/protocol/openid-connect/token")
    );
    assert_eq!(
        field(&token, "grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(
        field(&token, "client_secret").as_deref(),
        Some("idp-secret")
    );
    assert_eq!(field(&token, "scope").as_deref(), Some("sts openid"));
    let sts = call_of(job.on_result(
        &ok(json!({"access_token": "oidc-jwt", "expires_in": 300})),
        T0,
    ));
    assert_eq!(sts.cluster, "gsts");
    assert!(sts.header("authorization").is_none(), "STS refuses one");
    assert_eq!(field(&sts, "subject_token").as_deref(), Some("oidc-jwt"));
    assert_eq!(
        field(&sts, "subject_token_type").as_deref(),
        Some("urn:ietf:params:oauth:token-type:jwt")
    );
    assert_eq!(
        field(&sts, "grant_type").as_deref(),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert!(field(&sts, "audience").unwrap().ends_with("/providers/x"));
    let imp = call_of(job.on_result(
        &ok(json!({"access_token": "federated", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3599})),
        T0,
    ));
    assert_eq!(imp.cluster, "iam");
    assert_eq!(
        imp.header(":path"),
        Some("/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken")
    );
    assert_eq!(imp.header("authorization"), Some("Bearer federated"));
    let body: Value = serde_json::from_slice(&imp.body).unwrap();
    assert_eq!(
        body,
        json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "3600s"})
    );
    let expires = crate::date::parse_rfc3339_utc("2026-12-07T15:01:23Z").unwrap();
    let done = job.on_result(
        &ok(json!({"accessToken": "sa-token", "expireTime": "2026-12-07T15:01:23Z"})),
        expires * 1000 - 3_600_000,
    );
    assert_eq!(done, Step::Done(Ok(())));
    assert_eq!(
        bearer(slot.current(expires * 1000 - 3_600_000).unwrap()),
        "sa-token"
    );
    assert!(slot.current(expires * 1000).is_none());
}

#[test]
fn discovery_must_stay_on_the_issuers_host() {
    let spec = Arc::new(ExchangeSpec::new(
        Kind::AwsWebIdentity {
            role_arn: "arn:aws:iam::1:role/r".into(),
            session_name: "aigw".into(),
            subject: client_credentials(IdpEndpoint::Issuer(endpoint(
                "idp",
                "https://idp.example",
            ))),
            duration_seconds: None,
            sts: endpoint("sts", "https://sts.us-east-1.amazonaws.com/"),
        },
        DEFAULT_TIMEOUT,
    ));
    let registry = Registry::new();
    let Acquire::Lead(mut job) = registry.slot(&spec).acquire(&SecretStore::default(), T0) else {
        panic!()
    };
    let _ = call_of(job.start(T0));
    let Step::Done(Err(e)) = job.on_result(
        &ok(json!({"token_endpoint": "https://elsewhere.example/token"})),
        T0,
    ) else {
        panic!()
    };
    assert!(
        e.to_string().contains("another host (elsewhere.example)"),
        "{e}"
    );
}

fn web_identity(token: Secret) -> Arc<ExchangeSpec> {
    Arc::new(ExchangeSpec::new(
        Kind::AwsWebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/gw".into(),
            session_name: "aigw".into(),
            subject: Subject::Token(token),
            duration_seconds: Some(900),
            sts: endpoint("sts", "https://sts.us-west-2.amazonaws.com/"),
        },
        DEFAULT_TIMEOUT,
    ))
}

fn aws_keys(t: Token) -> Arc<Credentials> {
    match t {
        Token::Aws(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn aws_web_identity_reads_json_and_xml_answers() {
    let secrets = SecretStore::default();
    secrets.set("/var/run/token", b"projected-jwt\n");
    let spec = web_identity(Secret::File("/var/run/token".into()));
    let expires = crate::date::parse_rfc3339_utc("2026-12-07T15:00:00Z").unwrap();
    let now = (expires - 900) * 1000;
    let json_answer = ok(json!({"AssumeRoleWithWebIdentityResponse": {
        "AssumeRoleWithWebIdentityResult": {"Credentials": {
            "AccessKeyId": "ASIAJSON", "SecretAccessKey": "secret", "SessionToken": "session",
            "Expiration": (expires as f64)}}, "ResponseMetadata": {"RequestId": "r"}}}));
    let xml_answer = CalloutResult::Response {
        status: 200,
        headers: vec![],
        body: String::from(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleWithWebIdentityResult><Credentials><SessionToken>session&amp;x</SessionToken>\
             <SecretAccessKey>secret</SecretAccessKey><Expiration>2026-12-07T15:00:00Z</Expiration>\
             <AccessKeyId>ASIAXML</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>\
             </AssumeRoleWithWebIdentityResponse>"
        )
        .into_bytes(),
    };
    for (answer, id, session) in [
        (json_answer, "ASIAJSON", "session"),
        (xml_answer, "ASIAXML", "session&x"),
    ] {
        let registry = Registry::new();
        let slot = registry.slot(&spec);
        let Acquire::Lead(mut job) = slot.acquire(&secrets, now) else {
            panic!()
        };
        let call = call_of(job.start(now));
        assert_eq!(
            call.header(":authority"),
            Some("sts.us-west-2.amazonaws.com")
        );
        assert_eq!(call.header("accept"), Some("application/json"));
        assert!(call.header("authorization").is_none(), "unsigned");
        assert_eq!(
            form(&call),
            [
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", "arn:aws:iam::123456789012:role/gw"),
                ("RoleSessionName", "aigw"),
                ("WebIdentityToken", "projected-jwt"),
                ("DurationSeconds", "900"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(job.on_result(&answer, now), Step::Done(Ok(())));
        let keys = aws_keys(slot.current(now).unwrap());
        assert_eq!(keys.access_key_id(), id);
        assert_eq!(keys.session_token(), Some(session));
        // 900 s life: given up 30 s before it ends.
        assert!(slot.current(expires * 1000 - 30_001).is_some());
        assert!(slot.current(expires * 1000 - 30_000).is_none());
    }
    let registry = Registry::new();
    let slot = registry.slot(&spec);
    let Acquire::Lead(mut job) = slot.acquire(&secrets, now) else {
        panic!()
    };
    let _ = job.start(now);
    let denied = error(
        403,
        "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
         <Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>",
    );
    assert_eq!(
        job.on_result(&denied, now),
        Step::Done(Err(ExchangeError::new(
            "AWS STS answered 403 (AccessDenied)"
        )))
    );
}

#[test]
fn aws_assume_role_is_signed_with_the_base_keys() {
    let spec = Arc::new(ExchangeSpec::new(
        Kind::AwsAssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/lambda".into(),
            session_name: "aigw".into(),
            external_id: Some("ext".into()),
            duration_seconds: None,
            base: AwsCredentials::Static(Credentials::new("AKIDBASE", "base-secret", None)),
            sts: endpoint("sts", "https://sts.amazonaws.com/"),
            region: "us-east-1".into(),
        },
        DEFAULT_TIMEOUT,
    ));
    let registry = Registry::new();
    let Acquire::Lead(mut job) = registry.slot(&spec).acquire(&SecretStore::default(), T0) else {
        panic!()
    };
    let call = call_of(job.start(T0));
    let auth = call.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDBASE/")
            && auth.contains("/us-east-1/sts/aws4_request"),
        "{auth}"
    );
    assert_eq!(
        call.header("x-amz-date"),
        Some(crate::auth::sigv4::format_amz_date(T0 / 1000).as_str())
    );
    assert_eq!(field(&call, "Action").as_deref(), Some("AssumeRole"));
    assert_eq!(field(&call, "ExternalId").as_deref(), Some("ext"));
    assert!(!format!("{call:?}").contains("base-secret"));
}
