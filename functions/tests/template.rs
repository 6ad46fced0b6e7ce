//! `template.yaml` against the code: every route of `mfa_core::routes()` is deployed with the
//! function that serves it, every Lambda binary is deployed and nothing else, and the
//! permissions stay least-privilege.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
const BINARIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin");
/// The local server: every route on one listener, not a Lambda function.
const LOCAL_SERVER: &str = "mfa-local";
/// The one bootstrap every function deploys; `MFA_FUNCTION` names the function it serves.
const DEPLOYED_BINARY: &str = "mfa-lambda";

/// DynamoDB actions on items of one table, as IAM names them. `TransactWriteItems` is not
/// among them: IAM authorizes each write inside a transaction as its own item action.
/// (cfn-lint skips its check of IAM action names on SAM templates, so it is checked here.)
const DYNAMODB_ITEM_ACTIONS: [&str; 8] = [
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
];

struct Template {
    doc: Yaml,
}

/// One `AWS::Serverless::Function` of the template.
struct Function<'a> {
    logical_id: String,
    resource: &'a Yaml,
}

impl Template {
    fn load() -> Template {
        let text = std::fs::read_to_string(TEMPLATE).expect("template.yaml is readable");
        let mut docs = YamlLoader::load_from_str(&text).expect("template.yaml is valid YAML");
        assert_eq!(docs.len(), 1, "template.yaml holds one YAML document");
        Template { doc: docs.remove(0) }
    }

    fn resources(&self) -> Vec<(String, &Yaml)> {
        let resources = self.doc["Resources"].as_hash().expect("template has Resources");
        resources
            .iter()
            .map(|(id, resource)| (id.as_str().expect("logical ids are strings").to_string(), resource))
            .collect()
    }

    fn resources_of_type(&self, kind: &str) -> Vec<(String, &Yaml)> {
        self.resources().into_iter().filter(|(_, r)| r["Type"].as_str() == Some(kind)).collect()
    }

    fn functions(&self) -> Vec<Function<'_>> {
        self.resources_of_type("AWS::Serverless::Function")
            .into_iter()
            .map(|(logical_id, resource)| Function { logical_id, resource })
            .collect()
    }

    fn function(&self, name: &str) -> Function<'_> {
        let mut found = self.functions().into_iter().filter(|f| f.name() == name);
        let function = found.next().unwrap_or_else(|| panic!("no function is named {name}"));
        assert!(found.next().is_none(), "function {name} is deployed twice");
        function
    }

    fn table_id(&self) -> String {
        let tables = self.resources_of_type("AWS::DynamoDB::Table");
        assert_eq!(tables.len(), 1, "the template has exactly one DynamoDB table");
        tables[0].0.clone()
    }
}

impl Function<'_> {
    /// The function's name (`MFA_FUNCTION`): which routes the shared bootstrap serves, and
    /// the binary cargo lambda watch runs for it locally.
    fn name(&self) -> &str {
        self.resource["Properties"]["Environment"]["Variables"]["MFA_FUNCTION"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no Environment.Variables.MFA_FUNCTION", self.logical_id))
    }

    fn binary(&self) -> &str {
        self.resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no Metadata.BuildProperties.Binary", self.logical_id))
    }

    /// (method, path) of each HttpApi event, with the API it is attached to.
    fn http_routes(&self) -> Vec<(String, String, &Yaml)> {
        let Some(events) = self.resource["Properties"]["Events"].as_hash() else { return vec![] };
        events
            .values()
            .filter(|event| event["Type"].as_str() == Some("HttpApi"))
            .map(|event| {
                let props = &event["Properties"];
                let method = props["Method"].as_str().expect("HttpApi events have a Method");
                let path = props["Path"].as_str().expect("HttpApi events have a Path");
                (method.to_uppercase(), path.to_string(), &props["ApiId"])
            })
            .collect()
    }

    /// The entries of `Properties.Policies`, which SAM takes as one entry or a list.
    fn policies(&self) -> Vec<&Yaml> {
        match &self.resource["Properties"]["Policies"] {
            Yaml::BadValue => vec![],
            Yaml::Array(list) => list.iter().collect(),
            single => vec![single],
        }
    }

    /// Every statement of the inline policy documents; panics on SAM policy templates or
    /// managed policies, whose reach the template does not show.
    fn statements(&self) -> Vec<&Yaml> {
        let mut statements = Vec::new();
        for policy in self.policies() {
            let statement = &policy["Statement"];
            assert!(
                !statement.is_badvalue(),
                "{}: only inline policy documents with explicit statements, not {policy:?}",
                self.logical_id
            );
            match statement {
                Yaml::Array(list) => statements.extend(list.iter()),
                single => statements.push(single),
            }
        }
        statements
    }

    /// The statements granting anything in DynamoDB (or everything).
    fn dynamodb_statements(&self) -> Vec<&Yaml> {
        self.statements()
            .into_iter()
            .filter(|s| {
                assert!(s["NotAction"].is_badvalue(), "{}: NotAction hides what is granted", self.logical_id);
                strings(&s["Action"]).iter().any(|a| a == "*" || a.to_lowercase().starts_with("dynamodb:"))
            })
            .collect()
    }
}

/// A string or a list of strings.
fn strings(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Array(list) => list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => vec![],
    }
}

/// `{Ref: <id>}`'s id.
fn ref_target(value: &Yaml) -> Option<&str> {
    value["Ref"].as_str()
}

/// Whether `value` is `Fn::GetAtt: [<id>, Arn]` (or `Fn::GetAtt: <id>.Arn`).
fn is_arn_of(value: &Yaml, id: &str) -> bool {
    match &value["Fn::GetAtt"] {
        Yaml::Array(parts) => parts.len() == 2 && parts[0].as_str() == Some(id) && parts[1].as_str() == Some("Arn"),
        Yaml::String(dotted) => dotted == &format!("{id}.Arn"),
        _ => false,
    }
}

/// `/v1/account/sessions/:sessionId` as SAM writes it: `/v1/account/sessions/{sessionId}`.
fn sam_path(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix(':') {
            Some(param) => format!("{{{param}}}"),
            None => segment.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `create-mfa-challenge` -> `CreateMfaChallenge`.
fn pascal_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn lambda_binaries() -> BTreeSet<String> {
    std::fs::read_dir(BINARIES)
        .expect("functions/src/bin is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| Path::new(&path).file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != LOCAL_SERVER && name != DEPLOYED_BINARY)
        .collect()
}

#[test]
fn the_template_declares_exactly_the_routes_of_the_route_table_each_with_its_function() {
    let template = Template::load();
    let mut declared = Vec::new();
    for function in template.functions() {
        for (method, path, _) in function.http_routes() {
            declared.push((method, path, function.name().to_string()));
        }
    }
    let unique: BTreeSet<_> = declared.iter().cloned().collect();
    assert_eq!(unique.len(), declared.len(), "a route is declared twice: {declared:#?}");

    let expected: BTreeSet<_> = mfa_core::routes()
        .iter()
        .map(|r| (r.method.as_str().to_string(), sam_path(r.path), r.function.to_string()))
        .collect();
    let missing: Vec<_> = expected.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes() and template.yaml differ\nmissing from the template (or with another function): {missing:#?}\n\
         in the template only (or with another function): {extra:#?}"
    );
}

#[test]
fn every_route_goes_through_the_one_http_api() {
    let template = Template::load();
    let apis = template.resources_of_type("AWS::Serverless::HttpApi");
    assert_eq!(apis.len(), 1, "one HTTP API serves every route");
    let api = &apis[0].0;
    for function in template.functions() {
        for (method, path, api_id) in function.http_routes() {
            assert_eq!(ref_target(api_id), Some(api.as_str()), "{method} {path} is not attached to {api}");
        }
    }
}

#[test]
fn every_function_binary_is_deployed_and_no_function_lacks_one() {
    let template = Template::load();
    let binaries = lambda_binaries();
    assert!(!binaries.is_empty(), "functions/src/bin has Lambda binaries");

    let mut deployed = BTreeMap::new();
    for function in template.functions() {
        let previous = deployed.insert(function.name().to_string(), function.logical_id.clone());
        assert!(previous.is_none(), "function {} is deployed twice", function.name());
        assert!(
            mfa_core::api::functions::by_name(function.name()).is_some(),
            "MFA_FUNCTION={} of {} names no function of the route table",
            function.name(),
            function.logical_id
        );
    }
    let deployed_names: BTreeSet<_> = deployed.keys().cloned().collect();
    assert_eq!(
        deployed_names, binaries,
        "deployed functions differ from functions/src/bin (without {LOCAL_SERVER} and {DEPLOYED_BINARY})"
    );
    assert!(!deployed.contains_key(LOCAL_SERVER), "the local server is not a Lambda function");

    for (name, logical_id) in &deployed {
        assert_eq!(logical_id, &format!("{}Function", pascal_case(name)), "logical id of {name}");
    }
}

#[test]
fn every_function_deploys_the_one_shared_bootstrap() {
    // One build for all functions: `sam build` runs it once for identical build metadata.
    let template = Template::load();
    for function in template.functions() {
        assert_eq!(function.binary(), DEPLOYED_BINARY, "{} deploys another binary", function.logical_id);
    }
}

#[test]
fn every_function_is_built_by_cargo_lambda_from_the_workspace() {
    let template = Template::load();
    for function in template.functions() {
        let resource = function.resource;
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{} is not built by cargo-lambda",
            function.logical_id
        );
        assert_eq!(
            resource["Properties"]["CodeUri"].as_str(),
            Some("."),
            "{} builds from the workspace",
            function.logical_id
        );
    }
}

#[test]
fn the_table_expires_items_on_expires_at() {
    let template = Template::load();
    let table_id = template.table_id();
    let ttl = &template.doc["Resources"][table_id.as_str()]["Properties"]["TimeToLiveSpecification"];
    assert_eq!(ttl["AttributeName"].as_str(), Some("expiresAt"));
    assert_eq!(ttl["Enabled"].as_bool(), Some(true));
}

#[test]
fn no_function_has_a_dynamodb_permission_beyond_the_table() {
    let template = Template::load();
    let table_id = template.table_id();
    for function in template.functions() {
        for statement in function.dynamodb_statements() {
            let id = &function.logical_id;
            assert!(statement["NotResource"].is_badvalue(), "{id}: NotResource hides what is granted");
            let resources = match &statement["Resource"] {
                Yaml::Array(list) => list.iter().collect::<Vec<_>>(),
                single => vec![single],
            };
            assert!(
                !resources.is_empty() && resources.iter().all(|r| is_arn_of(r, &table_id)),
                "{id}: DynamoDB may be granted on the table's ARN only, not {:?}",
                statement["Resource"]
            );
            for action in strings(&statement["Action"]) {
                assert!(
                    DYNAMODB_ITEM_ACTIONS.contains(&action.as_str()),
                    "{id}: {action} is not an item action of DynamoDB's IAM (a transaction needs the \
                     actions of its writes, e.g. dynamodb:PutItem, not dynamodb:TransactWriteItems)"
                );
            }
        }
    }
}

#[test]
fn the_qr_function_reaches_only_its_rate_counters() {
    let template = Template::load();
    let qr = template.function("get-qr");
    let actions: BTreeSet<String> = qr.dynamodb_statements().iter().flat_map(|s| strings(&s["Action"])).collect();
    let counters: BTreeSet<String> = ["dynamodb:BatchGetItem", "dynamodb:UpdateItem"].map(String::from).into();
    assert_eq!(actions, counters, "get-qr reads and counts its per-address budget, nothing else");
}
