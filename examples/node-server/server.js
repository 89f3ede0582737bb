// A minimal app for Zepid Deploy: listens on PORT and prints the GREETING env variable.
const http = require('node:http');

const port = Number(process.env.PORT || 8080);
const greeting = process.env.GREETING || 'Hello';

http
  .createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    response.end(`${greeting} from a Node app deployed by Zepid Deploy (path ${request.url})\n`);
  })
  .listen(port, () => console.log(`listening on ${port}`));
