/**
 * `GET /`: the status page, status.html, served as it is (no build step, nothing fetched from
 * elsewhere), under a Content-Security-Policy that lets it run only its own inline script and
 * style (by their SHA-256), talk only to this service, and show only its own images and the
 * figures' `data:` PNGs. The page holds no data: it asks `/health`, `/metrics` and `stats`, with
 * the token the user gives it, from the browser.
 *
 * @module
 */

export class StatusPage {
  #prepared: Promise<{ html: string; csp: string }> | undefined;

  async response(): Promise<Response> {
    const { html, csp } = await (this.#prepared ??= prepare());
    return new Response(html, {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": csp,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
      },
    });
  }
}

async function prepare(): Promise<{ html: string; csp: string }> {
  const html = await Deno.readTextFile(new URL("./status.html", import.meta.url));
  const hashes = async (tag: string) => {
    const sources = [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g"))];
    const digests = await Promise.all(sources.map(async ([, source]) => {
      const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(source));
      return `'sha256-${btoa(String.fromCharCode(...new Uint8Array(digest)))}'`;
    }));
    return digests.join(" ");
  };
  const csp = [
    "default-src 'none'",
    `script-src ${await hashes("script")}`,
    `style-src ${await hashes("style")}`,
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  return { html, csp };
}
