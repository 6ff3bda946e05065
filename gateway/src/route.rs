//! Parsing a predict URL: which model, which deployment target, and what to
//! call on the replica. Pure and allocation-free: it borrows from the request.

use routing::Target;

/// What the client asked a replica to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    /// `.../predict`: the replica's `/predict`.
    Predict,
    /// `.../sync/{route...}`: passed through to the replica's `/{route...}`.
    /// Holds the replica path, starting with `/`.
    Sync(&'a str),
    /// `.../wake`: start the target if it is scaled to zero (202), without
    /// a prediction.
    Wake,
}

/// A parsed predict URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The model id, from the host or the `/models/{id}` prefix.
    pub model_id: &'a str,
    /// Which of the model's deployments.
    pub target: Target<'a>,
    /// What to call on it.
    pub call: Call<'a>,
}

/// The URL names no model or no known route. Both are 404s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteParseError {
    /// Neither a `model-{id}.` host nor a `/models/{id}/` path.
    #[error(
        "no model in the request: use host `model-{{id}}.<domain>` or path `/models/{{id}}/...`"
    )]
    NoModel,
    /// A model, but not one of the predict routes.
    #[error(
        "unknown route: use /production/predict, /environments/{{name}}/predict, /development/predict or /deployment/{{id}}/predict"
    )]
    UnknownRoute,
}

/// Parses the host (without or with port) and the path (without query).
pub fn parse<'a>(host: Option<&'a str>, path: &'a str) -> Result<Route<'a>, RouteParseError> {
    let (model_id, rest) = match host.and_then(model_from_host) {
        Some(id) => (id, path),
        None => {
            let after = path
                .strip_prefix("/models/")
                .ok_or(RouteParseError::NoModel)?;
            let (id, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
            if id.is_empty() {
                return Err(RouteParseError::NoModel);
            }
            (id, rest)
        }
    };
    let rest = rest
        .strip_prefix('/')
        .ok_or(RouteParseError::UnknownRoute)?;
    let (first, rest) = split_segment(rest);
    let (target, rest) = match first {
        "production" => (Target::Production, rest),
        "development" => (Target::Development, rest),
        "environments" => {
            let (name, rest) = split_segment(rest.ok_or(RouteParseError::UnknownRoute)?);
            (Target::Environment(non_empty(name)?), rest)
        }
        "deployment" => {
            let (id, rest) = split_segment(rest.ok_or(RouteParseError::UnknownRoute)?);
            (Target::Deployment(non_empty(id)?), rest)
        }
        _ => return Err(RouteParseError::UnknownRoute),
    };
    let call = match rest {
        Some("predict") => Call::Predict,
        Some("wake") => Call::Wake,
        Some(r) if r == "sync" || r.starts_with("sync/") => Call::Sync(match &r[4..] {
            "" => "/",
            route => route,
        }),
        _ => return Err(RouteParseError::UnknownRoute),
    };
    Ok(Route {
        model_id,
        target,
        call,
    })
}

/// `model-{id}.anything` or `model-{id}` with an optional port.
fn model_from_host(host: &str) -> Option<&str> {
    let rest = host.strip_prefix("model-")?;
    let end = rest.find(['.', ':']).unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty()).then_some(id)
}

/// `a/b/c` -> (`a`, Some(`b/c`)); `a` -> (`a`, None).
fn split_segment(path: &str) -> (&str, Option<&str>) {
    match path.split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    }
}

fn non_empty(segment: &str) -> Result<&str, RouteParseError> {
    if segment.is_empty() {
        Err(RouteParseError::UnknownRoute)
    } else {
        Ok(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(host: Option<&str>, path: &str) -> (String, Target<'static>, Call<'static>) {
        let r = parse(host, path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // Leak for simple comparisons in tests only.
        let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
        let target = match r.target {
            Target::Production => Target::Production,
            Target::Development => Target::Development,
            Target::Environment(e) => Target::Environment(leak(e)),
            Target::Deployment(d) => Target::Deployment(leak(d)),
        };
        let call = match r.call {
            Call::Predict => Call::Predict,
            Call::Sync(p) => Call::Sync(leak(p)),
            Call::Wake => Call::Wake,
        };
        (r.model_id.to_owned(), target, call)
    }

    #[test]
    fn host_forms() {
        let host = Some("model-abc123.api.example.com");
        assert_eq!(
            ok(host, "/production/predict"),
            ("abc123".into(), Target::Production, Call::Predict)
        );
        assert_eq!(
            ok(Some("model-x:8080"), "/development/predict").1,
            Target::Development
        );
        assert_eq!(
            ok(host, "/environments/staging/predict").1,
            Target::Environment("staging")
        );
        assert_eq!(
            ok(host, "/deployment/d1/predict").1,
            Target::Deployment("d1")
        );
        assert_eq!(
            ok(host, "/environments/prod/sync/v1/chat/completions").2,
            Call::Sync("/v1/chat/completions")
        );
        assert_eq!(ok(host, "/production/sync").2, Call::Sync("/"));
        assert_eq!(ok(host, "/development/wake").2, Call::Wake);
        assert_eq!(ok(host, "/deployment/d1/wake").2, Call::Wake);
    }

    #[test]
    fn path_prefix_form() {
        assert_eq!(
            ok(Some("127.0.0.1:8080"), "/models/m1/production/predict"),
            ("m1".into(), Target::Production, Call::Predict)
        );
        assert_eq!(
            ok(None, "/models/m1/deployment/x/predict").1,
            Target::Deployment("x")
        );
    }

    #[test]
    fn rejects() {
        use RouteParseError::*;
        let host = Some("model-a.example.com");
        assert_eq!(
            parse(Some("example.com"), "/production/predict"),
            Err(NoModel)
        );
        assert_eq!(parse(Some("model-.x"), "/production/predict"), Err(NoModel));
        assert_eq!(parse(None, "/models//production/predict"), Err(NoModel));
        for path in [
            "/",
            "",
            "/production",
            "/production/predict/",
            "/production/predictx",
            "/environments//predict",
            "/environments/predict",
            "/deployment/",
            "/staging/predict",
            "/production/syncx",
            "/production/wake/",
        ] {
            assert_eq!(parse(host, path), Err(UnknownRoute), "{path}");
        }
    }
}
