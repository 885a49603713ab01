(function () {
  var answer = window.location.hash.slice(1);
  if (answer) {
    window.location.replace(window.location.pathname + "?" + answer);
  } else {
    document.getElementById("message").textContent =
      "This return link carries no answer from your bank. You can close this window.";
  }
})();
