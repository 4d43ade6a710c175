// Drives the OHIF viewer in Debian's chromium for tests/ohif/test_ohif.py.
//
// Usage: node drive_ohif.mjs PLAN.json RESULT.json
// PLAN: {viewerUrl, artifactsDir, login?: {username, password}, steps: [{name,
//        kind: "worklist" | "viewer", path, waitForText?, segmentationText?}]}
// RESULT: {login?: {formShown, formUrl, landedAt, error}, steps: [{name, bodyText,
//          canvases, segmentationLoaded, error}], requests: [{method, url, status,
//          bearer}], failedResponses, failedRequests, blockedRequests, consoleErrors}
// With plan.login, the viewer is opened once before the steps, and the login form it
// redirects to (the archive's /auth/authorize page) is filled in and submitted.
// Every request to a host other than 127.0.0.1 or localhost is aborted and recorded.
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [planPath, resultPath] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planPath, "utf8"));
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost"]);
const STEP_TIMEOUT_MS = 45000;

const result = {
  steps: [],
  requests: [],
  failedResponses: [],
  failedRequests: [],
  blockedRequests: [],
  consoleErrors: [],
};

function isLoopback(url) {
  if (url.startsWith("data:") || url.startsWith("blob:")) return true;
  try {
    return LOOPBACK_HOSTS.has(new URL(url).hostname);
  } catch {
    return false;
  }
}

// Statistics of every cornerstone canvas on the page: size, distinct colours in a sample
// and the number of sampled pixels that are not grey (a SEG overlay is coloured).
function canvasStatistics() {
  const canvases = [...document.querySelectorAll("canvas.cornerstone-canvas")];
  return canvases.map((canvas) => {
    const width = canvas.width;
    const height = canvas.height;
    if (!width || !height) return { width, height, distinctColours: 0, colouredPixels: 0 };
    const copy = document.createElement("canvas");
    copy.width = width;
    copy.height = height;
    const context = copy.getContext("2d");
    context.drawImage(canvas, 0, 0);
    const pixels = context.getImageData(0, 0, width, height).data;
    const colours = new Set();
    let colouredPixels = 0;
    const stride = 4 * 3;
    for (let offset = 0; offset < pixels.length; offset += stride) {
      const red = pixels[offset];
      const green = pixels[offset + 1];
      const blue = pixels[offset + 2];
      if (colours.size < 5000) colours.add((red << 16) | (green << 8) | blue);
      if (Math.max(red, green, blue) - Math.min(red, green, blue) > 40) colouredPixels += 1;
    }
    return { width, height, distinctColours: colours.size, colouredPixels };
  });
}

// The canvas statistics, or [] while the page is navigating: with login on, a freshly
// loaded viewer first goes through the login redirect and back.
async function canvasStatisticsOf(page) {
  try {
    return await page.evaluate(canvasStatistics);
  } catch (error) {
    if (String(error).includes("Execution context was destroyed")) return [];
    throw error;
  }
}

async function waitForPixels(page, minimumColours) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let statistics = [];
  while (Date.now() < deadline) {
    statistics = await canvasStatisticsOf(page);
    if (statistics.some((canvas) => canvas.distinctColours >= minimumColours)) {
      return statistics;
    }
    await page.waitForTimeout(500);
  }
  return statistics;
}

// Opens the viewer, waits for the login form it redirects to, submits the plan's
// credentials and waits until the browser is back on the viewer.
async function logIn(page) {
  const outcome = { formShown: false, formUrl: "", landedAt: "" };
  try {
    await page.goto(plan.viewerUrl + "/", { waitUntil: "load" });
    const password = page.locator('input[name="password"]');
    await password.waitFor({ timeout: STEP_TIMEOUT_MS });
    outcome.formShown = true;
    outcome.formUrl = page.url();
    await page.locator('input[name="username"]').fill(plan.login.username);
    await password.fill(plan.login.password);
    await page.locator('button[type="submit"]').click();
    await page.waitForURL(
      (url) => url.href.startsWith(plan.viewerUrl) && !url.pathname.startsWith("/callback"),
      { timeout: STEP_TIMEOUT_MS },
    );
    await page.waitForLoadState("networkidle", { timeout: STEP_TIMEOUT_MS });
  } catch (error) {
    outcome.error = String(error);
  }
  outcome.landedAt = page.url();
  await page
    .screenshot({ path: join(plan.artifactsDir, "login.png") })
    .catch((error) => (outcome.screenshotError = String(error)));
  return outcome;
}

async function runStep(page, step) {
  const outcome = { name: step.name, bodyText: "", canvases: [], segmentationLoaded: false };
  try {
    await page.goto(plan.viewerUrl + step.path, { waitUntil: "load" });
    if (step.waitForText) {
      await page
        .getByText(step.waitForText, { exact: false })
        .first()
        .waitFor({ timeout: STEP_TIMEOUT_MS });
    }
    if (step.kind === "viewer") {
      outcome.canvases = await waitForPixels(page, 3);
      if (step.segmentationText) {
        const thumbnail = page.getByText(step.segmentationText, { exact: true }).first();
        await thumbnail.dblclick({ timeout: STEP_TIMEOUT_MS });
        const deadline = Date.now() + STEP_TIMEOUT_MS;
        while (Date.now() < deadline) {
          outcome.canvases = await canvasStatisticsOf(page);
          if (outcome.canvases.some((canvas) => canvas.colouredPixels > 0)) {
            outcome.segmentationLoaded = true;
            break;
          }
          await page.waitForTimeout(500);
        }
      }
    } else {
      await page.waitForLoadState("networkidle", { timeout: STEP_TIMEOUT_MS });
    }
  } catch (error) {
    outcome.error = String(error);
  }
  outcome.bodyText = await page.evaluate(() => document.body.innerText).catch(() => "");
  await page
    .screenshot({ path: join(plan.artifactsDir, `${step.name}.png`) })
    .catch((error) => (outcome.screenshotError = String(error)));
  return outcome;
}

const userDataDir = mkdtempSync(join(tmpdir(), "noctis-ohif-chromium-"));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: plan.chromiumPath,
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    // Host names other than loopback fail to resolve, in case a request bypasses the route.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
  ],
});
try {
  await browser.route("**/*", (route) => {
    const url = route.request().url();
    if (isLoopback(url)) return route.continue();
    result.blockedRequests.push(url);
    return route.abort("blockedbyclient");
  });
  browser.on("response", (response) => {
    const request = response.request();
    const entry = { method: request.method(), url: response.url(), status: response.status() };
    // Whether the request carried a bearer token; the token itself is not recorded.
    entry.bearer = (request.headers()["authorization"] ?? "").startsWith("Bearer ");
    result.requests.push(entry);
    if (response.status() >= 400) {
      result.failedResponses.push({ ...entry, accept: response.request().headers()["accept"] ?? "" });
    }
  });
  browser.on("requestfailed", (request) => {
    if (!isLoopback(request.url())) return;
    result.failedRequests.push({ url: request.url(), failure: request.failure()?.errorText ?? "" });
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("console", (message) => {
    if (message.type() === "error") result.consoleErrors.push(message.text().slice(0, 500));
  });
  if (plan.login) {
    result.login = await logIn(page);
  }
  for (const step of plan.steps) {
    result.steps.push(await runStep(page, step));
  }
} finally {
  await browser.close();
  rmSync(userDataDir, { recursive: true, force: true });
  writeFileSync(resultPath, JSON.stringify(result, null, 2));
}
