// Every code cell of a notebook page can be folded away: each cell's source is wrapped in an open
// <details> block whose summary toggles it. Outputs stay visible. No network, no dependencies.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("div.cell > div.cell_input").forEach(function (input) {
    if (input.closest("details")) {
      return;  // a cell that the theme already folds (tag hide-input)
    }
    var details = document.createElement("details");
    details.className = "minirank-code";
    details.open = true;
    var summary = document.createElement("summary");
    summary.textContent = "code";
    details.appendChild(summary);
    input.parentNode.insertBefore(details, input);
    details.appendChild(input);
  });
});
