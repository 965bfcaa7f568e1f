//! Minimal server-rendered pages for when the web dashboard is not built ([`crate::web`]
//! serves the dashboard at these paths once it is): the first-run
//! setup form (`/setup?token=`), the pairing approval form (`/pair?code=`), and a home page
//! saying how to build the dashboard. They call the same JSON API as everything else and
//! never put user data into HTML (the scripts use `textContent`).

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/setup", get(setup))
        .route("/pair", get(pair))
}

const STYLE: &str = "body{font:16px system-ui,sans-serif;background:#0f1419;color:#e6e6e6;max-width:40rem;margin:3rem auto;padding:0 1rem}\
input,button{font:inherit;padding:.5rem;margin:.25rem 0;width:100%;box-sizing:border-box;border-radius:6px;border:1px solid #445}\
input{background:#1a2029;color:#e6e6e6}button{background:#3b82f6;color:#fff;border:0;cursor:pointer}\
.err{color:#ff8080}.ok{color:#7ee787}code{background:#1a2029;padding:.1rem .3rem;border-radius:4px}dt{color:#9aa5b1}";

fn page(title: &str, body: &str) -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>"
        )),
    )
        .into_response()
}

async fn home() -> Response {
    if let Some(app) = crate::web::index() {
        return app;
    }
    page(
        "Vitals",
        "<h1>Vitals hub</h1><p>The hub is running. The web dashboard is not built into this binary: \
         run <code>npm --prefix web ci &amp;&amp; npm --prefix web run build</code>, then rebuild the hub \
         (the README's run command does both).</p><p>The HTTP API works now: see the README's API reference. \
         <a href=/healthz style=color:#8ab4f8>/healthz</a> · <a href=/metrics style=color:#8ab4f8>/metrics</a></p>",
    )
}

async fn setup() -> Response {
    if let Some(app) = crate::web::index() {
        return app;
    }
    page(
        "Vitals setup",
        r#"<h1>Create the first admin</h1>
<form id=f><label>User name<input id=u autocomplete=username required></label>
<label>Password (8+ characters)<input id=p type=password autocomplete=new-password minlength=8 required></label>
<button>Create admin</button></form><p id=m></p>
<script>
const token=new URLSearchParams(location.search).get('token')||'';
document.getElementById('f').onsubmit=async e=>{e.preventDefault();const m=document.getElementById('m');
const r=await fetch('/api/setup',{method:'POST',headers:{'content-type':'application/json'},
body:JSON.stringify({token,username:document.getElementById('u').value,password:document.getElementById('p').value})});
const j=await r.json().catch(()=>({}));m.className=r.ok?'ok':'err';
m.textContent=r.ok?'Admin created and signed in.':(j.message||('error '+r.status));if(r.ok)setTimeout(()=>location.href='/',800)};
</script>"#,
    )
}

async fn pair() -> Response {
    if let Some(app) = crate::web::index() {
        return app;
    }
    page(
        "Vitals: approve a device",
        r#"<h1>Approve a device</h1><dl id=who></dl>
<form id=f hidden><label>Device name<input id=n required maxlength=100></label>
<button id=a>Approve</button> <button id=d type=button style="background:#555">Deny</button></form><p id=m></p>
<script>
const code=new URLSearchParams(location.search).get('code')||'';const m=document.getElementById('m');
const csrf=(document.cookie.match(/(?:^|; )vitals_csrf=([^;]*)/)||[])[1]||'';
const H={'content-type':'application/json','x-csrf-token':csrf};
function row(k,v){const dt=document.createElement('dt');dt.textContent=k;const dd=document.createElement('dd');dd.textContent=v??'';document.getElementById('who').append(dt,dd)}
(async()=>{const r=await fetch('/api/device-codes/'+encodeURIComponent(code));const j=await r.json().catch(()=>({}));
if(r.status===401){m.className='err';m.textContent='Sign in as an admin first, then reload this page.';return}
if(!r.ok){m.className='err';m.textContent=j.message||'Unknown code';return}
if(j.status==='expired'){m.className='err';m.textContent='This code expired. Run the agent\'s pair command again.';return}
if(j.status==='approved'){m.className='ok';m.textContent='This code was already approved.';return}
row('Code',j.code);row('Hostname',j.hostname);row('Host id',j.hostId);row('IP address',j.sourceIp);row('Agent version',j.agentVersion);row('Requested',j.requestedAt);
document.getElementById('n').value=j.hostname||'';document.getElementById('f').hidden=false})();
document.getElementById('f').onsubmit=async e=>{e.preventDefault();const r=await fetch('/api/device-codes/'+encodeURIComponent(code)+'/approve',{method:'POST',headers:H,body:JSON.stringify({name:document.getElementById('n').value})});
const j=await r.json().catch(()=>({}));m.className=r.ok?'ok':'err';m.textContent=r.ok?'Approved. The agent will start sending within seconds.':(j.message||('error '+r.status));if(r.ok)document.getElementById('f').hidden=true};
document.getElementById('d').onclick=async()=>{const r=await fetch('/api/device-codes/'+encodeURIComponent(code)+'/deny',{method:'POST',headers:H});
m.className=r.ok?'ok':'err';m.textContent=r.ok?'Denied.':'Could not deny (error '+r.status+')';document.getElementById('f').hidden=true};
</script>"#,
    )
}
