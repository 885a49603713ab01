//! The PIS operations once a request passed the common checks of [`super::api`]: initiate,
//! read, cancel, and the payment and cancellation authorisations. Each answers an
//! [`Answer`] with the spec schema its body must satisfy, or a [`Refusal`].

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use super::api::{Answer, Op, Target, header};
use super::refusal::{Refusal, TppMessage};
use super::scenarios;
use super::state::{Approach, AuthKind, Authorisation, Payment, ScaStatus, TxStatus, new_id};
use super::{BgSandbox, rules, spec};

/// The operation itself, once the request passed the common checks.
pub(super) fn operate(
    sb: &BgSandbox,
    method: &Method,
    headers: &HeaderMap,
    raw: &[u8],
    t: &Target<'_>,
    owner: String,
) -> Result<Answer, Refusal> {
    if !matches!(t.service, "payments" | "periodic-payments") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "PARAMETER_NOT_SUPPORTED",
            Some("payment-service"),
            format!(
                "payment-service {} is not offered (payments, periodic-payments)",
                t.service
            ),
        ));
    }
    if !sb.config.products.iter().any(|p| p == t.product) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "PRODUCT_UNKNOWN",
            Some("payment-product"),
            format!(
                "payment-product {} is not offered (offered: {})",
                t.product,
                sb.config.products.join(", ")
            ),
        ));
    }
    let body = if t.op.has_body() {
        let ct = header(headers, "content-type").unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime != "application/json" {
            return Err(Refusal::bare(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let v: Value = serde_json::from_slice(raw)
            .map_err(|e| Refusal::format("body", format!("the body is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(Refusal::format("body", "the body must be a JSON object"));
        }
        v
    } else {
        if !raw.is_empty() {
            return Err(Refusal::format("body", format!("{method} takes no body")));
        }
        Value::Null
    };
    if t.op == Op::Initiate {
        return initiate(sb, headers, t, body, owner);
    }
    let pid = t.payment_id.unwrap_or_default();
    let now = sb.now();
    let step = sb.config.status_step;
    let mut bank = sb.bank();
    let payment = bank
        .payments
        .get(pid)
        // Hidden (scenario 77.04) from reads and DELETE, not from starting the SCA that
        // leads the shopper to the page.
        .filter(|p| !p.hidden() || matches!(t.op, Op::StartAuth | Op::UpdatePsu))
        .cloned()
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "RESOURCE_UNKNOWN",
                Some("paymentId"),
                "no such payment",
            )
        })?;
    if payment.owner != owner {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "RESOURCE_UNKNOWN",
            Some("paymentId"),
            "the payment belongs to another TPP",
        ));
    }
    if payment.service != t.service {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "SERVICE_INVALID",
            Some("payment-service"),
            format!("the payment was initiated as {}", payment.service),
        ));
    }
    if payment.product != t.product {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "PRODUCT_INVALID",
            Some("payment-product"),
            format!("the payment was initiated as {}", payment.product),
        ));
    }
    let status = payment.status(now, step);
    let self_path = format!("/v1/{}/{}/{pid}", payment.service, payment.product);
    match t.op {
        Op::Get => {
            let mut b = payment.body.clone();
            b["transactionStatus"] = json!(status.code());
            let schema = if payment.service == "periodic-payments" {
                "periodicPaymentInitiationWithStatusResponse"
            } else {
                "paymentInitiationWithStatusResponse"
            };
            Ok(Answer::json(StatusCode::OK, schema, b))
        }
        Op::Status => Ok(Answer::json(
            StatusCode::OK,
            "paymentInitiationStatusResponse-200_json",
            json!({ "transactionStatus": status.code() }),
        )),
        Op::ListAuth | Op::ListCancelAuth => {
            let ids = if t.op == Op::ListAuth {
                payment.authorisations.clone()
            } else {
                payment.cancellation_authorisations.clone()
            };
            Ok(Answer::json(
                StatusCode::OK,
                "authorisations",
                json!({ "authorisationIds": ids }),
            ))
        }
        Op::ScaStatus | Op::CancelScaStatus => {
            let kind = if t.op == Op::ScaStatus {
                AuthKind::Payment
            } else {
                AuthKind::Cancellation
            };
            let auth = find_auth(&bank, pid, t.authorisation_id, kind)?;
            let mut b = json!({ "scaStatus": auth.sca_status.code() });
            if auth.approach == Approach::Decoupled && auth.sca_status == ScaStatus::Started {
                b["psuMessage"] = json!("Please approve the payment in your bank's app.");
            }
            Ok(Answer::json(StatusCode::OK, "scaStatusResponse", b))
        }
        Op::Cancel => {
            if status.is_final() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "RESOURCE_BLOCKED",
                    Some("paymentId"),
                    format!("the payment is final ({})", status.code()),
                ));
            }
            let signed = payment.signed_at.is_some();
            if signed && payment.product == "instant-sepa-credit-transfers" {
                return Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "CANCELLATION_INVALID",
                    Some("paymentId"),
                    "a signed instant payment cannot be cancelled",
                ));
            }
            let deletes_at_once = if signed {
                payment.scenario_ref.cancel_signed_without_sca
            } else {
                !payment.scenario_ref.cancel_needs_sca
            };
            if deletes_at_once {
                let auths = payment.authorisations.clone();
                if let Some(p) = bank.payments.get_mut(pid) {
                    p.cancelled = true;
                }
                for a in auths {
                    if let Some(a) = bank.auths.get_mut(&a)
                        && !a.sca_status.is_final()
                    {
                        a.sca_status = ScaStatus::Failed;
                    }
                }
                return Ok(Answer {
                    status: StatusCode::NO_CONTENT,
                    headers: Vec::new(),
                    body: None,
                    schema: None,
                });
            }
            if let Some(p) = bank.payments.get_mut(pid) {
                p.cancel_pending = true;
            }
            Ok(Answer::json(
                StatusCode::ACCEPTED,
                "paymentInitiationCancelResponse-202",
                json!({
                    "transactionStatus": status.code(),
                    "_links": {
                        "self": { "href": sb.api_link(&self_path) },
                        "status": { "href": sb.api_link(&format!("{self_path}/status")) },
                        "startAuthorisation": { "href": sb.api_link(&format!("{self_path}/cancellation-authorisations")) }
                    }
                }),
            ))
        }
        Op::StartAuth | Op::StartCancelAuth => {
            if body.as_object().is_some_and(|o| !o.is_empty()) {
                return Err(Refusal::format(
                    "body",
                    "this ASPSP offers no embedded SCA: start an authorisation with {}",
                ));
            }
            let cancellation = t.op == Op::StartCancelAuth;
            let open = |ids: &[String]| {
                ids.iter()
                    .filter_map(|a| bank.auths.get(a))
                    .any(|a| a.sca_status != ScaStatus::Failed)
            };
            let allowed = if cancellation {
                payment.cancel_pending
                    && !status.is_final()
                    && !open(&payment.cancellation_authorisations)
            } else {
                status == TxStatus::Rcvd && !payment.cancelled && !open(&payment.authorisations)
            };
            if !allowed {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "STATUS_INVALID",
                    None,
                    if cancellation {
                        "no cancellation waiting for an authorisation (DELETE first, or one is open)"
                    } else {
                        "the payment does not allow another authorisation"
                    },
                ));
            }
            let mut approach = if cancellation {
                Approach::Redirect
            } else {
                payment.approach
            };
            let redirect_uri = header(headers, "tpp-redirect-uri").map(str::to_owned);
            let psu_id = header(headers, "psu-id")
                .map(str::to_owned)
                .or_else(|| payment.psu_id.clone());
            let payment_redirect = payment.redirect_uri.clone();
            if cancellation && redirect_uri.is_none() && payment_redirect.is_none() {
                approach = Approach::Decoupled;
            }
            if approach != Approach::Decoupled
                && redirect_uri.is_none()
                && payment_redirect.is_none()
            {
                return Err(Refusal::format(
                    "TPP-Redirect-URI",
                    "redirect SCA needs TPP-Redirect-URI",
                ));
            }
            let (service, product) = (payment.service.clone(), payment.product.clone());
            let aid = new_id();
            let started = approach == Approach::Decoupled && psu_id.is_some();
            let auth = Authorisation {
                id: aid.clone(),
                payment_id: pid.to_owned(),
                kind: if cancellation {
                    AuthKind::Cancellation
                } else {
                    AuthKind::Payment
                },
                approach,
                sca_status: if started {
                    ScaStatus::Started
                } else {
                    ScaStatus::Received
                },
                created_at: now,
                started_at: started.then_some(now),
                psu_id: if approach == Approach::Decoupled {
                    psu_id
                } else {
                    None
                },
                code_challenge: None,
                authorize_request: None,
                oauth_code: None,
                approved: false,
            };
            let sca_status = auth.sca_status;
            bank.auths.insert(aid.clone(), auth);
            if let Some(p) = bank.payments.get_mut(pid) {
                if let Some(u) = redirect_uri {
                    p.redirect_uri = Some(u);
                }
                if cancellation {
                    p.cancellation_authorisations.push(aid.clone());
                } else {
                    p.authorisations.push(aid.clone());
                }
            }
            let sub = if cancellation {
                "cancellation-authorisations"
            } else {
                "authorisations"
            };
            let sca_status_link =
                sb.api_link(&format!("/v1/{service}/{product}/{pid}/{sub}/{aid}"));
            let mut links = json!({ "scaStatus": { "href": sca_status_link } });
            match approach {
                Approach::Redirect => {
                    links["scaRedirect"] = json!({ "href": sb.link(&format!("/sca/{aid}")) })
                }
                Approach::OAuth => {
                    links["scaOAuth"] =
                        json!({ "href": sb.link("/.well-known/oauth-authorization-server") })
                }
                Approach::Decoupled if !started => {
                    links["updatePsuIdentification"] = json!({ "href": sca_status_link })
                }
                Approach::Decoupled => {}
            }
            let mut b =
                json!({ "scaStatus": sca_status.code(), "authorisationId": aid, "_links": links });
            if started {
                b["psuMessage"] = json!("Please approve the payment in your bank's app.");
            }
            let mut a = Answer::json(StatusCode::CREATED, "startScaprocessResponse", b);
            a.headers
                .push(("ASPSP-SCA-Approach", approach.header().to_owned()));
            Ok(a)
        }
        Op::UpdatePsu | Op::UpdateCancelPsu => {
            let kind = if t.op == Op::UpdatePsu {
                AuthKind::Payment
            } else {
                AuthKind::Cancellation
            };
            let auth = find_auth(&bank, pid, t.authorisation_id, kind)?.clone();
            let obj = body.as_object().cloned().unwrap_or_default();
            if obj.contains_key("confirmationCode") {
                let v = spec::validate("authorisationConfirmation", &body);
                if let Some(first) = v.first() {
                    return Err(Refusal::format(
                        &format!("body{}", first.path),
                        first.message.clone(),
                    ));
                }
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "STATUS_INVALID",
                    None,
                    format!(
                        "no confirmation is pending (scaStatus {})",
                        auth.sca_status.code()
                    ),
                ));
            }
            if !obj.is_empty() {
                return Err(Refusal::format(
                    "body",
                    "this ASPSP offers no embedded SCA: identify the PSU with {} and PSU-ID",
                ));
            }
            if auth.approach != Approach::Decoupled {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "STATUS_INVALID",
                    None,
                    "PSU identification is only needed for a decoupled SCA",
                ));
            }
            let Some(psu) = header(headers, "psu-id") else {
                return Err(Refusal::format(
                    "PSU-ID",
                    "PSU identification needs the PSU-ID header",
                ));
            };
            if auth.sca_status != ScaStatus::Received {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "STATUS_INVALID",
                    None,
                    format!(
                        "the PSU is already identified (scaStatus {})",
                        auth.sca_status.code()
                    ),
                ));
            }
            if let Some(a) = bank.auths.get_mut(&auth.id) {
                a.psu_id = Some(psu.to_owned());
                a.sca_status = ScaStatus::Started;
                a.started_at = Some(now);
            }
            let sub = if kind == AuthKind::Payment {
                "authorisations"
            } else {
                "cancellation-authorisations"
            };
            Ok(Answer::json(
                StatusCode::OK,
                "updatePsuIdentificationResponse",
                json!({
                    "scaStatus": "started",
                    "psuMessage": "Please approve the payment in your bank's app.",
                    "_links": { "scaStatus": { "href": sb.api_link(&format!("{self_path}/{sub}/{}", auth.id)) } }
                }),
            ))
        }
        Op::Initiate => unreachable!("handled above"),
    }
}

fn find_auth<'b>(
    bank: &'b super::state::Bank,
    pid: &str,
    aid: Option<&str>,
    kind: AuthKind,
) -> Result<&'b Authorisation, Refusal> {
    aid.and_then(|a| bank.auths.get(a))
        .filter(|a| a.payment_id == pid && a.kind == kind)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "RESOURCE_UNKNOWN",
                Some("authorisationId"),
                "no such authorisation of this payment",
            )
        })
}

fn initiate(
    sb: &BgSandbox,
    headers: &HeaderMap,
    t: &Target<'_>,
    body: Value,
    owner: String,
) -> Result<Answer, Refusal> {
    let periodic = t.service == "periodic-payments";
    let schema = if periodic {
        "periodicPaymentInitiation_json"
    } else {
        "paymentInitiation_json"
    };
    let violations = spec::validate(schema, &body);
    if !violations.is_empty() {
        let messages = violations
            .into_iter()
            .take(10)
            .map(|v| TppMessage {
                code: "FORMAT_ERROR",
                path: Some(if v.path.is_empty() {
                    "body".into()
                } else {
                    v.path
                }),
                text: v.message.chars().take(480).collect(),
            })
            .collect();
        return Err(Refusal::many(StatusCode::BAD_REQUEST, messages));
    }
    let now = sb.now();
    let problems = rules::check_initiation(t.product, periodic, &body, now.date_naive());
    if !problems.is_empty() {
        return Err(Refusal::many(StatusCode::BAD_REQUEST, problems));
    }
    let scenario = scenarios::pick(
        body["creditorName"].as_str().unwrap_or(""),
        body["instructedAmount"]["currency"].as_str().unwrap_or(""),
        body["instructedAmount"]["amount"].as_str().unwrap_or(""),
    );
    let decoupled_preferred = header(headers, "tpp-redirect-preferred") == Some("false")
        || header(headers, "tpp-decoupled-preferred") == Some("true");
    let approach = Approach::from_scenario(scenario.approach, decoupled_preferred);
    let explicit = header(headers, "tpp-explicit-authorisation-preferred") == Some("true");
    let redirect_uri = header(headers, "tpp-redirect-uri").map(str::to_owned);
    if approach != Approach::Decoupled && redirect_uri.is_none() {
        return Err(Refusal::format(
            "TPP-Redirect-URI",
            "redirect SCA (this payment's approach) needs TPP-Redirect-URI",
        ));
    }
    let pid = new_id();
    let self_path = format!("/v1/{}/{}/{pid}", t.service, t.product);
    let mut links = json!({
        "self": { "href": sb.api_link(&self_path) },
        "status": { "href": sb.api_link(&format!("{self_path}/status")) },
    });
    let exempted = scenario.exempted;
    let implicit = !explicit && approach != Approach::Decoupled && !exempted;
    let mut auths = Vec::new();
    let mut bank = sb.bank();
    let mut response = json!({ "transactionStatus": "RCVD", "paymentId": pid });
    if exempted {
        // No SCA: the bank goes on by itself (the statuses run from now).
        response["transactionStatus"] = json!("ACTC");
        response["scaStatus"] = json!("exempted");
    } else if implicit {
        let aid = new_id();
        bank.auths.insert(
            aid.clone(),
            Authorisation {
                id: aid.clone(),
                payment_id: pid.clone(),
                kind: AuthKind::Payment,
                approach,
                sca_status: ScaStatus::Received,
                created_at: now,
                started_at: None,
                psu_id: None,
                code_challenge: None,
                authorize_request: None,
                oauth_code: None,
                approved: false,
            },
        );
        links["scaStatus"] =
            json!({ "href": sb.api_link(&format!("{self_path}/authorisations/{aid}")) });
        if approach == Approach::OAuth {
            links["scaOAuth"] =
                json!({ "href": sb.link("/.well-known/oauth-authorization-server") });
        } else {
            links["scaRedirect"] = json!({ "href": sb.link(&format!("/sca/{aid}")) });
        }
        response["scaStatus"] = json!("received");
        auths.push(aid);
    } else if approach == Approach::Decoupled {
        links["startAuthorisationWithPsuIdentification"] =
            json!({ "href": sb.api_link(&format!("{self_path}/authorisations")) });
    } else {
        links["startAuthorisation"] =
            json!({ "href": sb.api_link(&format!("{self_path}/authorisations")) });
    }
    response["_links"] = links;
    bank.payments.insert(
        pid.clone(),
        Payment {
            id: pid.clone(),
            service: t.service.to_owned(),
            product: t.product.to_owned(),
            body,
            created_at: now,
            scenario: scenario.id,
            scenario_ref: scenario,
            approach,
            explicit,
            redirect_uri,
            nok_redirect_uri: header(headers, "tpp-nok-redirect-uri").map(str::to_owned),
            psu_id: header(headers, "psu-id").map(str::to_owned),
            owner,
            authorisations: auths,
            cancellation_authorisations: Vec::new(),
            opened: false,
            signed_at: exempted.then_some(now),
            sca_failed: false,
            cancelled: false,
            cancel_pending: false,
        },
    );
    let mut a = Answer::json(
        StatusCode::CREATED,
        "paymentInitiationRequestResponse-201",
        response,
    );
    a.headers.push(("Location", sb.api_link(&self_path)));
    a.headers
        .push(("ASPSP-SCA-Approach", approach.header().to_owned()));
    Ok(a)
}
