//! `GET /openapi.json` and `GET /docs`: the document describes every route the server
//! serves (checked against the README's table, the source, and the running server), every
//! error answer is the one `ErrorBody`, and Swagger UI comes from the binary.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// `(METHOD, path)` of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS.iter().filter(|m| item.get(**m).is_some()).map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

async fn document(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200, "served without a token");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("the document is JSON")
}

/// `(METHOD, path)` of every row of the README's HTTP API table, query strings dropped.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme.split("## HTTP API").nth(1).expect("an HTTP API section").split("\n\n").nth(2).unwrap();
    let routes: BTreeSet<_> = table
        .lines()
        .filter_map(|row| row.strip_prefix("| `")?.split('`').next())
        .map(|route| {
            let (method, target) = route.split_once(' ').expect("`METHOD /path`");
            let path = target.split('?').next().unwrap();
            (method.to_owned(), path.to_owned())
        })
        .collect();
    assert!(routes.len() > 20, "the table was found: {routes:?}");
    routes
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_error_is_the_error_body() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;

    assert!(document["openapi"].as_str().unwrap().starts_with("3.1."), "{}", document["openapi"]);
    assert_eq!(document["info"]["title"], "camledger");
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], "camledger_session");
    let error_body = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error_body["required"], serde_json::json!(["error", "message"]));

    let mut errors = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let responses = item[method]["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')), "{method} {path}: a success");
            for (status, response) in responses.iter().filter(|(s, _)| s.as_str() >= "400") {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                errors += 1;
            }
        }
    }
    assert!(errors > 50, "error answers are described ({errors})");
}

#[tokio::test]
async fn the_readme_table_and_the_document_list_the_same_routes() {
    let app = TestApp::spawn().await;
    let documented = operations(&document(&app).await);
    let listed = readme_routes();

    let undocumented: Vec<_> = listed.difference(&documented).collect();
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(undocumented.is_empty(), "in the README, not in /openapi.json: {undocumented:?}");
    assert!(unlisted.is_empty(), "in /openapi.json, not in the README's HTTP API table: {unlisted:?}");
}

/// `path` with each `{param}` replaced by something the route accepts as a value.
fn concrete(path: &str) -> String {
    path.replace("{seq}", "1").replace("{name}", "app.js").replace("{file}", "index.html")
}

#[tokio::test]
async fn every_documented_route_is_served_by_the_running_server() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (method, path) in operations(&document(&app).await) {
        let url = app.url(&concrete(&path));
        let response = client.request(method.parse().unwrap(), &url).send().await.unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        // Without a token most routes answer 401; what matters is that a route answered:
        // the fallback says "no such route", a wrong method 405 with an empty body.
        assert_ne!(status, 405, "{method} {path}: the method is served");
        assert!(
            !String::from_utf8_lossy(&body).contains("no such route"),
            "{method} {path} reached the fallback ({status})"
        );
    }
}

/// The source files under `dir`, recursively.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A route added with axum's own `.route(…)` would be served but never described: routes
/// are added only through utoipa-axum's `routes!`, which reads each handler's
/// `#[utoipa::path]`. The one exception is the `--metrics-listen` listener, which serves only
/// `GET /metrics` (described on the API listener).
#[test]
fn every_route_in_the_source_goes_through_the_documented_router() {
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let allowed = [("routes/metrics.rs", ".route(\"/metrics\"")];
    let mut found = Vec::new();
    for file in rust_files(src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let name = file.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
        for (n, line) in code.lines().enumerate() {
            let line = line.trim();
            if line.starts_with("//") {
                continue;
            }
            for call in [".route(", ".route_service(", ".nest(", ".nest_service(", ".fallback_service("] {
                if line.contains(call) && !allowed.iter().any(|(f, l)| *f == name && line.contains(l)) {
                    found.push(format!("{name}:{}: {line}", n + 1));
                }
            }
            if line.contains(".routes(") && !line.contains("routes!(") {
                found.push(format!("{name}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "routes outside utoipa-axum's routes! (add #[utoipa::path] and use routes!):\n{}",
        found.join("\n")
    );
}

#[tokio::test]
async fn the_docs_are_swagger_ui_from_the_binary_under_their_own_policy() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let docs = client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 303);
    assert_eq!(docs.headers()["location"], "/docs/index.html");

    let page = client.get(app.url("/docs/index.html")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-cache");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("http") && !csp.contains("unsafe-eval"), "nothing from elsewhere: {csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    // Every script and stylesheet the page loads comes from here, and no script is inline
    // (the policy allows none).
    let mut loaded = 0;
    for reference in html.split(['"', '\'']).filter(|s| s.ends_with(".js") || s.ends_with(".css")) {
        assert!(!reference.contains("//"), "loaded from elsewhere: {reference}");
        let file = reference.trim_start_matches("./");
        let response = client.get(app.url(&format!("/docs/{file}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{file}");
        assert!(response.headers()["content-security-policy"] == csp.as_str());
        assert!(!response.bytes().await.unwrap().is_empty(), "{file}");
        loaded += 1;
    }
    assert!(loaded >= 4, "the page's scripts and styles ({loaded})");
    let inline_scripts = html.split("<script").skip(1).filter(|tag| !tag.split('>').next().unwrap().contains("src="));
    assert_eq!(inline_scripts.count(), 0, "no inline script: {html}");

    let initializer = client.get(app.url("/docs/swagger-initializer.js")).send().await.unwrap().text().await.unwrap();
    assert!(initializer.contains("/openapi.json"), "the UI reads this server's document: {initializer}");
    let bundle = client.get(app.url("/docs/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(bundle.headers()["cache-control"], "public, max-age=300");
    assert!(bundle.headers()["content-type"].to_str().unwrap().contains("javascript"));
    for hostile in ["/docs/nothing.js", "/docs/..%2F..%2Fetc%2Fpasswd", "/docs/%00", "/docs/index.html%00.js"] {
        let missing = client.get(app.url(hostile)).send().await.unwrap();
        assert_eq!(missing.status(), 404, "{hostile}");
        assert_eq!(missing.json::<Value>().await.unwrap()["error"], "not_found", "{hostile}");
    }

    // The dashboard keeps its stricter policy.
    let dashboard = client.get(app.url("/")).send().await.unwrap();
    assert!(!dashboard.headers()["content-security-policy"].to_str().unwrap().contains("unsafe-inline"));
}

#[tokio::test]
async fn swagger_ui_renders_every_operation_in_chromium_within_its_policy() {
    if let Err(why) = crate::dashboard::browser_available() {
        // CI installs both (.ci/run); a developer machine without them is told loudly.
        assert!(std::env::var_os("CI").is_none(), "CI must run the browser test: {why}");
        eprintln!("\n!!!!!!!! SKIPPED the Swagger UI browser test: {why} !!!!!!!!\n");
        return;
    }
    let app = TestApp::spawn().await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/browser/docs.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .args(["--base", &app.base, "--token", &app.auditor_token])
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let measured: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).expect("measurements");
    eprintln!("Swagger UI in Chromium: {measured}");
    assert!(measured["operations"].as_u64().unwrap() > 20, "{measured}");
}
