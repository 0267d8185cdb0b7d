// Drives the admin console in the system chromium, for tests/it/console.rs, which starts the
// app, fills it with deliveries and a dead letter, runs this script and checks the fake
// PagerDuty afterwards. Every step asserts what a person would see; any failure exits 1
// naming the step. Screenshots go to $OUT (1280 px wide and phone width).
//
// Env: ADMIN (console origin), OFF_ADMIN (a server without an admin token), DRY_ADMIN (a
// dry run's), STORM_ADMIN (a server with a storm waiting on one key, STORM_KEY its fingerprint), HOOKS (webhook listener), TOKEN, GH_SECRET, SUMMARY (part of a delivered event's
// summary), SEARCH (part of a delivered event's dedup_key), DEAD_KEY (dedup_key of the dead
// letter), FIXTURES, OUT, CHROMIUM.

import { chromium } from "playwright-core";
import { createHmac, randomUUID } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const ADMIN = env("ADMIN");
// A second server with no admin token: its console says how to set one.
const OFF_ADMIN = env("OFF_ADMIN");
// A server under `serve --dry-run` that has logged one event.
const DRY_ADMIN = env("DRY_ADMIN");
const STORM_ADMIN = env("STORM_ADMIN");
const OUT = env("OUT");
const TIMEOUT = 10_000; // generous: a loaded 2-core machine
mkdirSync(OUT, { recursive: true });

let step = "start";
const foreign = [];
const seen = [];
let failures = 0;

function check(cond, what) {
  if (!cond) throw new Error(`${step}: ${what}`);
}

async function waitFor(what, fn, ms = TIMEOUT) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${step}: timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A context whose every request is recorded; any request to another origin is aborted. */
async function context(browser, viewport) {
  const ctx = await browser.newContext({ viewport, deviceScaleFactor: 1, serviceWorkers: "block" });
  ctx.setDefaultTimeout(TIMEOUT);
  await ctx.route("**/*", (route) => {
    const url = route.request().url();
    seen.push(url);
    if (![ADMIN, OFF_ADMIN, DRY_ADMIN, STORM_ADMIN].includes(new URL(url).origin)) {
      foreign.push(url);
      return route.abort();
    }
    return route.continue();
  });
  return ctx;
}

async function shot(page, name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.getByLabel("Admin token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** Sends a signed GitHub webhook the way GitHub does (from outside the browser). */
async function github(event, file) {
  const body = readFileSync(join(env("FIXTURES"), file));
  const sig = "sha256=" + createHmac("sha256", env("GH_SECRET")).update(body).digest("hex");
  const res = await fetch(`${env("HOOKS")}/hooks/github`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-github-event": event, "x-github-delivery": randomUUID(), "x-hub-signature-256": sig },
    body,
  });
  check(res.status === 202, `webhook answered ${res.status}`);
}

const rows = (page, table) => page.locator(`${table} tbody tr`);

/** A mapping to paste into the playground: it maps the failed workflow payload. */
const PASTED = `[[rule]]
name = "workflow failed"
when = '{{eq body.workflow_run.conclusion "failure"}}'
emit = "alert"
dedup_key = "workflow/{{body.workflow_run.head_branch}}"
summary = "Workflow failed on {{body.workflow_run.head_branch}}"
source = "{{default body.repository.full_name 'unknown repository'}}"
`;

async function desktop(browser) {
  const ctx = await context(browser, { width: 1280, height: 860 });
  const page = await ctx.newPage();
  const consoleErrors = [];
  // The browser logs every 401 and 422 as "Failed to load resource": those are the answers
  // the steps ask for. Anything else logged as an error, or thrown, fails the test.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  step = "sign-in page";
  await page.goto(`${ADMIN}/`);
  await page.getByLabel("Admin token").waitFor();
  check(await page.locator("#nav").isHidden(), "navigation hidden before sign-in");
  await shot(page, "signin-1280");

  step = "wrong token";
  await signIn(page, "not-the-token");
  const err = page.locator("#signin-error");
  await err.waitFor({ state: "visible" });
  check(/refused/i.test(await err.textContent()), `error says the token was refused: ${await err.textContent()}`);
  check(await page.locator("#nav").isHidden(), "no navigation after a wrong token");
  check(await rows(page, "#deliveries-table").count() === 0, "no delivery rows after a wrong token");
  check(await page.evaluate(() => sessionStorage.length) === 0, "a refused token is not kept");
  await shot(page, "signin-refused-1280");

  step = "right token";
  await signIn(page, env("TOKEN"));
  await page.getByRole("link", { name: "Deliveries" }).waitFor();
  for (const name of ["Incidents", "Dead letters", "Playground"]) await page.getByRole("link", { name }).waitFor();
  await waitFor("delivery rows show", async () => (await rows(page, "#deliveries-table").count()) >= 3);
  const firstRows = await rows(page, "#deliveries-table").count();
  await page.locator("#stats .stat").first().waitFor();
  check(/queued/.test(await page.locator("#stats").textContent()), "queue depth at the top");
  check(/delivered, last hour/.test(await page.locator("#stats").textContent()), "last hour's outcomes at the top");

  step = "deliveries refresh by themselves";
  await github("push", "push_default_branch.json");
  const t0 = Date.now();
  await waitFor("the new webhook's event appears without a reload", async () => (await rows(page, "#deliveries-table").count()) > firstRows, 5_000);
  const refreshMs = Date.now() - t0;
  await shot(page, "deliveries-1280");

  step = "search by summary";
  await page.getByLabel("Search").fill(env("SUMMARY"));
  await page.getByRole("button", { name: "Search" }).click();
  await waitFor("only the event with that summary is listed", async () => (await rows(page, "#deliveries-table").count()) === 1);
  const summary = await rows(page, "#deliveries-table").first().locator("td.summary").textContent();
  check(summary.includes(env("SUMMARY")), `the Summary column shows it: ${summary}`);
  await shot(page, "search-summary-1280");

  step = "search";
  await page.getByLabel("Search").fill(env("SEARCH"));
  await page.getByRole("button", { name: "Search" }).click();
  // The summary search listed one row too: wait for the row that holds the dedup_key.
  await waitFor("only the matching event is listed", async () =>
    (await rows(page, "#deliveries-table").count()) === 1 && (await rows(page, "#deliveries-table").first().textContent()).includes(env("SEARCH")));
  const row = rows(page, "#deliveries-table").first();
  check((await row.textContent()).includes(env("SEARCH")), "the row holds the searched dedup_key");
  check((await row.textContent()).includes("delivered"), "the searched event was delivered");
  await shot(page, "search-1280");

  step = "detail";
  await row.click();
  await page.getByRole("heading", { name: "Event as sent" }).waitFor();
  const detail = await page.locator("#detail").textContent();
  check(detail.includes("Event processed"), "PagerDuty's message in the attempts");
  check((await page.locator("#detail .http").allTextContents()).includes("202"), "the HTTP status of the attempt");
  check(detail.includes("dedup_key returned") && detail.split("dedup_key returned")[1].includes(env("SEARCH")), "the dedup_key PagerDuty answered with");
  check(detail.includes("x-github-event"), "the inbound request's headers");
  check(!/authorization/i.test(await page.locator("#detail table.kv tbody").textContent()), "no credential headers");
  const bodies = await page.locator("#detail pre.json").allTextContents();
  check(bodies.some((b) => b.includes(env("SEARCH"))), "the event as sent");
  check(bodies.some((b) => b.includes('\n  "action"')), "the inbound body pretty-printed");
  await shot(page, "detail-1280");

  step = "pagerhook's own pages";
  await page.getByRole("link", { name: "Deliveries", exact: true }).click();
  await page.getByLabel("Search").fill("pagerhook/");
  await page.getByRole("button", { name: "Search" }).click();
  await waitFor("pagerhook's own pages are listed", async () => (await rows(page, "#deliveries-table").count()) >= 3);
  const own = await rows(page, "#deliveries-table").allTextContents();
  check(own.every((t) => t.includes("pagerhook/") && t.includes("pagerhook")), `each is tagged as pagerhook's own: ${own}`);
  check(own.some((t) => t.includes("pagerhook/github/dead_trigger")), "the dead trigger paged");
  check(own.some((t) => t.includes("pagerhook/each/mapping_failed")), "the failed item paged");
  check(await page.locator("#deliveries-table tbody .badge.own").count() === own.length, "the tag is a badge on each");
  await shot(page, "own-pages-1280");

  step = "dead letters";
  await page.getByRole("link", { name: "Dead letters" }).click();
  const items = page.locator("#dead-table tbody tr", { hasText: "items failed" });
  await items.waitFor();
  check((await items.textContent()).includes("item 1: rule 'each'"), `the failed item named: ${await items.textContent()}`);
  await items.getByRole("button", { name: "Replay" }).click();
  await items.locator(".result.bad").waitFor();
  check(/Still failing: 1 item failed/.test(await items.locator(".result").textContent()), "its replay maps that item alone, still failing");
  const dead = page.locator("#dead-table tbody tr", { hasText: env("DEAD_KEY") });
  await dead.waitFor();
  check((await dead.textContent()).includes("Event object is invalid"), "the reason PagerDuty gave");
  await shot(page, "dead-1280");
  // Its deployment succeeded since (the resolve went out): a replay would open an incident
  // nothing closes, so it is skipped until asked again.
  await dead.getByRole("button", { name: "Replay", exact: true }).click();
  await dead.locator(".result.bad").waitFor();
  check(/Skipped: its incident was resolved after it died/.test(await dead.locator(".result").textContent()), "the skip and its reason");
  await shot(page, "dead-skipped-1280");
  await dead.getByRole("button", { name: "Replay anyway" }).click();
  await dead.locator(".result.ok").waitFor();
  check(/Queued again as event \d+/.test(await dead.locator(".result").textContent()), "the replay result in the row");
  await shot(page, "dead-replayed-1280");

  step = "incidents";
  await page.getByRole("link", { name: "Incidents" }).click();
  const incident = page.locator("#incidents-table tbody tr", { hasText: env("SEARCH") });
  await incident.waitFor();
  const text = await incident.textContent();
  check(text.includes("github") && text.includes("open"), `the open incident with its source: ${text}`);
  check(/\d+s ago|\dm ago/.test(await incident.locator("td").first().textContent()), "its age");
  check(/PagerDuty/.test(await page.locator("#incidents p.muted").textContent()), "says it is pagerhook's record, not PagerDuty's");
  await shot(page, "incidents-1280");
  await incident.getByRole("button", { name: "Resolve" }).click();
  await incident.locator(".result.ok").waitFor();
  check(/Resolve queued/.test(await incident.locator(".result").textContent()), "the resolve result in the row");
  await page.getByLabel("Resolved too").check();
  await waitFor("the incident shows resolved by the operator", async () => {
    await page.locator("#incidents-refresh").click();
    const t = await page.locator("#incidents-table tbody tr", { hasText: env("SEARCH") }).textContent().catch(() => "");
    return /resolved/.test(t) && t.includes("@operator");
  });
  await shot(page, "incidents-resolved-1280");

  step = "playground";
  await page.getByRole("link", { name: "Playground" }).click();
  await page.getByLabel("Source").selectOption("github");
  await page.getByLabel("Payload").fill(readFileSync(join(env("FIXTURES"), "pull_request_merged.json"), "utf8"));
  await page.getByLabel("Headers").fill("X-GitHub-Event: pull_request");
  await page.getByRole("button", { name: "Render" }).click();
  await page.locator("#render-out .rendered").first().waitFor();
  const out = await page.locator("#render-out").textContent();
  check(/1 event would be sent/.test(out), `one event rendered: ${out.slice(0, 200)}`);
  check(out.includes("/v2/change/enqueue"), "the change endpoint");
  check(out.includes("pull request merged") || out.includes("merged"), "the rule and summary");
  await shot(page, "playground-1280");

  step = "playground: a failed payload from dead letters, and its failing rule";
  await page.getByRole("link", { name: "Dead letters" }).click();
  await page.locator("#dead-table tbody tr", { hasText: "mapping failed" }).getByRole("button", { name: "Try in Playground" }).click();
  await waitFor("the payload is in the playground", async () => (await page.getByLabel("Payload").inputValue()).includes('"conclusion": "failure"'));
  check((await page.getByLabel("Headers").inputValue()).includes("x-github-event: workflow_run"), "its headers too");
  await page.getByRole("button", { name: "Render" }).click();
  const bad = page.locator("#render-out .banner.error");
  await bad.waitFor();
  check(/rule/i.test(await bad.textContent()), `names the failing rule: ${await bad.textContent()}`);
  await shot(page, "playground-error-1280");

  step = "playground: a pasted mapping renders the failed payload; Replay replays its dead letter";
  check(await page.locator("#pg-from").isVisible(), "the dead letter the payload came from is named, with Replay");
  await page.getByLabel("Mapping").fill(PASTED);
  await page.getByRole("button", { name: "Render" }).click();
  await page.locator("#render-out .rendered").first().waitFor();
  const pasted = await page.locator("#render-out").textContent();
  check(/1 event would be sent/.test(pasted) && /pasted mapping/.test(pasted), `rendered by the pasted mapping: ${pasted.slice(0, 200)}`);
  check(pasted.includes("Workflow failed on main"), `its summary: ${pasted.slice(0, 300)}`);
  await shot(page, "playground-pasted-1280");
  await page.getByLabel("Mapping").fill('[[rule]]\nname = "typo"\nemit = "alert"\nsource = "s"\nsummary = "{{bdy.x}}"\n');
  await page.getByRole("button", { name: "Render" }).click();
  await waitFor("the pasted mapping's problem is shown", async () => /unknown root in `bdy.x`/.test(await page.locator("#render-out").textContent()));
  // The mapping files are unchanged: the replayed payload still fails, and says so in place.
  await page.locator("#pg-from").getByRole("button", { name: "Replay" }).click();
  await waitFor("the replay's result", async () => /Still failing/.test(await page.locator("#pg-replay-result").textContent()));
  await shot(page, "playground-replay-1280");

  check(consoleErrors.length === 0, `no errors in the page: ${consoleErrors.join(" | ")}`);
  await ctx.close();
  return refreshMs;
}

async function phone(browser) {
  const ctx = await context(browser, { width: 390, height: 844 });
  const page = await ctx.newPage();
  step = "phone";
  await page.goto(`${ADMIN}/`);
  await signIn(page, env("TOKEN"));
  await waitFor("rows on a phone", async () => (await rows(page, "#deliveries-table").count()) > 0);
  await shot(page, "deliveries-phone");
  await rows(page, "#deliveries-table").first().click();
  await page.getByRole("heading", { name: "Event as sent" }).waitFor();
  await shot(page, "detail-phone");
  await page.getByRole("link", { name: "Dead letters" }).click();
  await page.locator("#dead-table tbody tr").first().waitFor();
  await shot(page, "dead-phone");
  await page.getByRole("link", { name: "Incidents" }).click();
  await page.locator("#incidents-table tbody tr").first().waitFor();
  await shot(page, "incidents-phone");
  await page.getByRole("link", { name: "Playground" }).click();
  await page.getByLabel("Source").selectOption("github");
  await shot(page, "playground-phone");
  // No page is wider than the phone: nothing to scroll sideways.
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 390, `page fits a phone (${wide}px wide)`);
  await ctx.close();
}

/** A dry run's console counts its dry runs. */
async function dryRun(browser) {
  const ctx = await context(browser, { width: 1280, height: 860 });
  const page = await ctx.newPage();
  step = "dry run";
  await page.goto(`${DRY_ADMIN}/`);
  await signIn(page, env("TOKEN"));
  const stat = page.locator("#stats .stat", { hasText: "dry runs (nothing sent), last hour" });
  await stat.waitFor();
  check((await stat.locator(".stat-value").textContent()) === "1", `one dry run counted: ${await stat.textContent()}`);
  check(!/paced/.test(await page.locator("#stats").textContent()), "no paced count in a dry run");
  await shot(page, "dry-run-1280");
  await ctx.close();
}

/** A storm on one routing key: the table above the deliveries names the key by its fingerprint,
 * how many wait, how long they take at its pace, and from which source. */
async function storm(browser) {
  const ctx = await context(browser, { width: 1280, height: 860 });
  const page = await ctx.newPage();
  step = "storm backlog";
  await page.goto(`${STORM_ADMIN}/`);
  await signIn(page, env("TOKEN"));
  const row = page.locator("#backlog-table tbody tr").first();
  await waitFor("the backlog table shows the key", async () => !(await page.locator("#backlog").isHidden()));
  const text = await row.textContent();
  check(text.includes(env("STORM_KEY")), `the key's fingerprint: ${text}`);
  // Five were sent at one a minute: four wait, or fewer if this step ran minutes later.
  const waiting = Number(await row.locator("td.num").textContent());
  check(waiting >= 2 && waiting <= 4, `some of the five wait: ${text}`);
  check((await row.locator("td.drain").textContent()) === `${waiting}m 0s`, `a minute each at one a minute: ${text}`);
  check(await row.locator("td.drain.bad").count() === 0 && await row.locator("td.drain.warn").count() === 1, "a drain over a minute warns");
  check(text.includes(`each ${waiting}`), `from which source: ${text}`);
  check(!text.includes(env("STORM_SECRET_KEY")), "never the key itself");
  await shot(page, "storm-backlog-1280");
  await ctx.close();
}

/** The "console is off" page: its steps show the token to sign in with, and every line of
 * them stays inside the card, on a desktop and on a phone. */
async function consoleOff(browser) {
  for (const [width, name] of [[1280, "console-off-1280"], [390, "console-off-phone"]]) {
    const ctx = await context(browser, { width, height: 844 });
    const page = await ctx.newPage();
    step = `console off (${width}px)`;
    await page.goto(`${OFF_ADMIN}/`);
    await page.getByRole("heading", { name: "The console is off" }).waitFor();
    const steps = await page.locator("#token-steps").textContent();
    check(/echo "\$PAGERHOOK_ADMIN_TOKEN"/.test(steps), `the steps print the token: ${steps}`);
    check(/pagerhook serve/.test(steps), `the steps start pagerhook: ${steps}`);
    const overflow = await page.evaluate(() => {
      const out = [];
      for (const el of document.querySelectorAll(".card, .card pre")) {
        if (el.scrollWidth > el.clientWidth) out.push(`${el.tagName} ${el.scrollWidth} > ${el.clientWidth}`);
      }
      const card = document.querySelector(".card").getBoundingClientRect();
      for (const pre of document.querySelectorAll(".card pre")) {
        const r = pre.getBoundingClientRect();
        if (r.right > card.right + 0.5) out.push(`pre ends at ${r.right}, card at ${card.right}`);
      }
      if (document.documentElement.scrollWidth > window.innerWidth) out.push(`page ${document.documentElement.scrollWidth}px wide`);
      return out;
    });
    check(overflow.length === 0, `nothing runs past the card: ${overflow.join("; ")}`);
    await shot(page, name);
    await ctx.close();
  }
}

// launch() gives the browser a fresh temporary profile (user-data-dir) of its own each run.
const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let refreshMs = null;
try {
  refreshMs = await desktop(browser);
  await phone(browser);
  await consoleOff(browser);
  await dryRun(browser);
  await storm(browser);
  step = "origin";
  check(seen.length > 0, "requests were recorded");
  check(foreign.length === 0, `requests left the admin origin: ${foreign.join(", ")}`);
} catch (e) {
  failures += 1;
  console.error(`FAILED ${e.stack ?? e}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ failures, requests: seen.length, foreign, refresh_ms: refreshMs }));
process.exit(failures ? 1 : 0);
