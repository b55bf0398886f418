// How the README's MLflow pictures were taken: `make ui`, then headless Chromium driven by playwright-core
// (apt-get install chromium; npm install playwright-core; node docs/screenshots/runs.js ...).
// usage: node runs.js URL OUT.png COLUMNS...   the run list, every pipeline run unfolded, these columns added
const { chromium } = require('playwright-core');
(async () => {
  const [url, out, ...columns] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 1600, height: 760 } });
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForSelector('text=Run Name', { timeout: 60000 });
  await page.waitForTimeout(2000);
  const close = page.locator('button[aria-label="Close"]').first();
  if (await close.count()) { await close.click().catch(() => {}); }
  await page.getByRole('button', { name: 'Columns' }).click();
  await page.waitForTimeout(800);
  for (const c of columns) {
    const search = page.locator('input[placeholder*="Search"]').last();
    await search.fill(c);
    await page.waitForTimeout(600);
    await page.getByRole('checkbox', { name: c, exact: true }).first().check().catch(async () => {
      await page.getByText(c, { exact: true }).last().click();
    });
    await page.waitForTimeout(400);
  }
  await page.keyboard.press('Escape');
  await page.waitForTimeout(500);
  const expand = 'button[data-component-id$="runnamecellrenderer.tsx_46"]';
  for (let i = 0; i < 10; i++) {  // the pipeline runs, each unfolded (the list grows under it)
    const buttons = await page.locator(expand).all();
    if (i >= buttons.length) break;
    await buttons[i].click().catch(() => {});
    await page.waitForTimeout(800);
  }
  await page.mouse.move(5, 5);
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out });
  await browser.close();
})();
