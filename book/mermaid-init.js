// Renders ```mermaid code blocks in the browser, offline: mermaid.min.js is bundled with the
// book, so no preprocessor and no network are needed.
(() => {
    const dark = ['ayu', 'navy', 'coal'].some((t) =>
        document.documentElement.classList.contains(t));
    const blocks = document.querySelectorAll('code.language-mermaid');
    for (const code of blocks) {
        const pre = code.closest('pre') || code;
        const diagram = document.createElement('pre');
        diagram.className = 'mermaid';
        diagram.textContent = code.textContent;
        pre.replaceWith(diagram);
    }
    mermaid.initialize({ startOnLoad: false, theme: dark ? 'dark' : 'default' });
    mermaid.run({ querySelector: 'pre.mermaid' });
})();
