// Prepares a fresh kefu for the browser tests: signs in as the bootstrap admin, gives it a
// display name, creates the site the demo page embeds and prints its widget key.
'use strict';

async function main() {
  const base = process.env.KEFU_URL;
  const call = async (method, path, body, token) => {
    const res = await fetch(base + path, {
      method,
      headers: Object.assign({ 'content-type': 'application/json' }, token ? { authorization: 'Bearer ' + token } : {}),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(data)}`);
    return data;
  };
  const { token, agent } = await call('POST', '/api/auth/login', {
    email: process.env.KEFU_ADMIN_EMAIL,
    password: process.env.KEFU_ADMIN_PASSWORD,
  });
  await call('PATCH', '/api/agents/' + agent.id, { name: 'Alice Chen', max_open: 50 }, token);
  const site = await call('POST', '/api/sites', {
    name: 'Acme Store',
    allowed_origins: [],
    greeting: 'Hi there! Ask us anything about your order.',
    offline_message: 'We are offline right now. Leave a message and we will reply by email.',
  }, token);
  process.stdout.write(site.widget_key + '\n');
}

main().catch((e) => {
  console.error('setup: ' + e.message);
  process.exit(1);
});
