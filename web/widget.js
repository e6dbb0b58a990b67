// Embeddable Visage widget. Add to any page:
//   <script src="//your-visage-host:8080/widget.js" defer></script>
// Optional attributes on the script tag: data-label="Talk to us", data-position="left".
// It opens the call page of the same server in a floating panel (an iframe allowed to use
// the microphone), so the host page's styles and scripts never clash with the call.
(() => {
  const script = document.currentScript;
  const origin = new URL(script.src, location.href).origin;
  const label = script.dataset.label || "Talk to our avatar";
  const side = script.dataset.position === "left" ? "left" : "right";

  const button = document.createElement("button");
  button.textContent = label;
  button.setAttribute("aria-expanded", "false");
  Object.assign(button.style, {
    position: "fixed", bottom: "20px", [side]: "20px", zIndex: 2147483646,
    border: "0", borderRadius: "999px", padding: "12px 20px", cursor: "pointer",
    font: "600 15px system-ui, sans-serif", color: "#fff", background: "#5b8cff",
    boxShadow: "0 8px 24px rgba(0,0,0,.3)",
  });

  let frame = null;
  button.addEventListener("click", () => {
    if (frame) {
      frame.remove();
      frame = null;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    frame = document.createElement("iframe");
    frame.src = `${origin}/`;
    frame.allow = "microphone; autoplay";
    frame.title = "Visage avatar call";
    Object.assign(frame.style, {
      position: "fixed", bottom: "76px", [side]: "20px", zIndex: 2147483647,
      width: "min(400px, 92vw)", height: "min(560px, 80vh)", border: "0",
      borderRadius: "18px", boxShadow: "0 20px 60px rgba(0,0,0,.45)", background: "#171c2c",
    });
    document.body.appendChild(frame);
    button.setAttribute("aria-expanded", "true");
  });
  document.body.appendChild(button);
})();
